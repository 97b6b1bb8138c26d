"""ratelock encoder: image -> latents (per candidate model) -> rate_control -> bitstream."""
