"""Dassl-compatible training core: the part of Dassl.pytorch's API that CoOp-family code uses.

Importing ``dassl`` has no side effects on global state (logging, warnings, RNGs).
"""
__version__ = "0.6.3"
