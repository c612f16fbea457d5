"""Raw-byte buffering and NDJSON framing: where a record ends.

Re-exports the compiled `ingest._buffer` or, under INGEST_PURE_PYTHON=1, the
reference `ingest._reference.buffer`. Both follow `ingest._protocols`.
"""
from ingest._select import PURE_PYTHON

if PURE_PYTHON:
    from ingest._reference.buffer import BatchBuffer, LineFramer, SealedBatch, split_json_array
else:
    from ingest._buffer import BatchBuffer, LineFramer, SealedBatch, split_json_array

IMPLEMENTATION = "python" if PURE_PYTHON else "cython"

__all__ = ["BatchBuffer", "LineFramer", "SealedBatch", "split_json_array", "IMPLEMENTATION"]
