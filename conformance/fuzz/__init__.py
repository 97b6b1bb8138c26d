"""Fuzz campaigns: one seed and mutator library (mutate.py) and three targets: parse, decode, PNG."""
