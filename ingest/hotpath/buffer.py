"""Raw-byte buffering and NDJSON framing: where a record ends.

Re-exports the compiled `ingest.hotpath._buffer` or, under INGEST_PURE_PYTHON=1, the
reference `ingest.hotpath.reference.buffer`. Both follow `ingest.hotpath.protocols`.
"""
from ingest.hotpath.select import IMPLEMENTATION, PURE_PYTHON

if PURE_PYTHON:
    from ingest.hotpath.reference.buffer import BatchBuffer, LineFramer, SealedBatch, split_json_array
else:
    from ingest.hotpath._buffer import BatchBuffer, LineFramer, SealedBatch, split_json_array

__all__ = ["BatchBuffer", "LineFramer", "SealedBatch", "split_json_array", "IMPLEMENTATION"]
