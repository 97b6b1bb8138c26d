"""Child processes the checks and campaigns spawn by module name (python -m conformance.children.<name>)."""
