"""Arrow IPC stream bodies (application/vnd.apache.arrow.stream): rows that
arrive columnar skip the JSON parse and the encoder; the pipeline logs them
as one Arrow record and lands them in order with the lines around them."""
from __future__ import annotations

import pyarrow as pa

from ingest.sources.formats.base import Decoded, InvalidBody

ARROW_STREAM_TYPE = "application/vnd.apache.arrow.stream"  # the registered name; query results are sent as it too
ARROW_STREAM_TYPES = (ARROW_STREAM_TYPE, "application/x-apache-arrow-stream")


def decode_arrow_stream(body: bytes) -> Decoded:
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as exc:
        raise InvalidBody(f"not an Arrow IPC stream: {exc}") from None
    if table.num_rows == 0:
        raise InvalidBody("the Arrow IPC stream holds no rows")
    batches = table.combine_chunks().to_batches()
    return Decoded(batch=batches[0] if len(batches) == 1 else pa.Table.from_batches(batches).combine_chunks()
                   .to_batches()[0])
