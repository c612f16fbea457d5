"""Chooses between the compiled hot path and the pure-Python reference.

INGEST_PURE_PYTHON=1 forces the reference implementation (for debugging and
for the differential tests); otherwise the compiled extension must load.
INGEST_EVENT_LOOP=asyncio runs the server on stock asyncio instead of uvloop.
"""
import os

PURE_PYTHON = os.environ.get("INGEST_PURE_PYTHON", "") not in ("", "0")
EVENT_LOOP = os.environ.get("INGEST_EVENT_LOOP", "uvloop")
