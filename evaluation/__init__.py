"""Rate-matched evaluation of ratelock against classical anchor codecs.

Run ``python -m evaluation --help``. See ``evaluation/README.md``.
"""
