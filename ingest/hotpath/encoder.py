"""JSON → Arrow encoding: what a record means.

Re-exports the compiled `ingest.hotpath._encoder` or, under INGEST_PURE_PYTHON=1, the
reference `ingest.hotpath.reference.encoder`. Both follow `ingest.hotpath.protocols`.
"""
from ingest.hotpath.protocols import EncodeResult
from ingest.hotpath.select import IMPLEMENTATION, PURE_PYTHON

if PURE_PYTHON:
    from ingest.hotpath.reference.encoder import Encoder, validate_lines
else:
    from ingest.hotpath._encoder import Encoder, validate_lines

__all__ = ["Encoder", "EncodeResult", "validate_lines", "IMPLEMENTATION"]
