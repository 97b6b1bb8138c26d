"""ratelock decoder: stands alone (imports only models' decode-side modules)."""
