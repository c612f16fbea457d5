"""The hot path: raw bytes -> framed lines -> Arrow record batches.

`buffer` (framing: where a record ends) and `encoder` (format: what it
means) each re-export the compiled extension (`_buffer`, `_encoder`, built
from ext/ingest/hotpath/) or, under INGEST_PURE_PYTHON=1, the readable
reference in `reference/`. Both follow `protocols` and take their rejection
reason texts from `reasons`; `_buffer.pyi` and `_encoder.pyi` type the
compiled modules.
"""
from ingest.hotpath.select import IMPLEMENTATION

__all__ = ["IMPLEMENTATION", "hot_path_compiled"]


def hot_path_compiled() -> bool:
    """Whether this process loaded the compiled extension (not the pure-Python reference)."""
    from ingest.hotpath import buffer, encoder

    if buffer.IMPLEMENTATION != "cython" or encoder.IMPLEMENTATION != "cython":
        return False
    import ingest.hotpath._buffer
    import ingest.hotpath._encoder

    return ingest.hotpath._buffer.__file__.endswith(".so") and ingest.hotpath._encoder.__file__.endswith(".so")
