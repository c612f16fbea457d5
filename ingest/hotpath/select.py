"""Chooses between the compiled hot path and the pure-Python reference.

INGEST_PURE_PYTHON=1 forces the reference implementation (for debugging and
for the differential tests); otherwise the compiled extension must load.
"""
import os

PURE_PYTHON = os.environ.get("INGEST_PURE_PYTHON", "") not in ("", "0")
IMPLEMENTATION = "python" if PURE_PYTHON else "cython"
