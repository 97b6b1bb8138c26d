"""ratelock conformance suite: the pre-submission check (rate, determinism, parity, golden streams, robustness).

Run `python -m conformance IMAGES_DIR`; see conformance/README.md.
"""
