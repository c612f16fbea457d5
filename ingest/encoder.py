"""JSON → Arrow encoding: what a record means.

Re-exports the compiled `ingest._encoder` or, under INGEST_PURE_PYTHON=1, the
reference `ingest._reference.encoder`. Both follow `ingest._protocols`.
"""
from ingest._protocols import EncodeResult
from ingest._select import PURE_PYTHON

if PURE_PYTHON:
    from ingest._reference.encoder import Encoder, validate_lines
else:
    from ingest._encoder import Encoder, validate_lines

IMPLEMENTATION = "python" if PURE_PYTHON else "cython"

__all__ = ["Encoder", "EncodeResult", "validate_lines", "IMPLEMENTATION"]
