"""Shared model code: transforms, entropy tables, integer hyper path, weight files.

Modules here that the decoder imports (targets, transforms, intnet, coding,
weights) must never import training code, the encoder or rate control.
"""
