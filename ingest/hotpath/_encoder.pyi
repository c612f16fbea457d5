"""Type stub of the compiled `ingest.hotpath._encoder` (ext/ingest/hotpath/_encoder.pyx).

tests/hotpath/test_stubs.py checks these names and signatures against the
built module; `ingest.hotpath.protocols` is the interface both it and the
reference implement.
"""
import pyarrow as pa
from typing_extensions import Buffer

from ingest.hotpath.protocols import EncodeResult

__all__ = ["Encoder", "validate_lines"]

class ArrowBuffer:
    """A finished column buffer (made only by Encoder), exported read-only to pyarrow."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    @property
    def view_count(self) -> int: ...

class Encoder:
    def __init__(self, table: str = "", max_depth: int = 64, schema: pa.Schema | None = None,
                 strict: bool = False) -> None: ...
    @property
    def table(self) -> str: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def strict(self) -> bool: ...
    @property
    def schema(self) -> pa.Schema: ...
    def encode(self, data: Buffer, spans: Buffer) -> EncodeResult: ...

def validate_lines(data: Buffer, spans: Buffer, max_depth: int = 64) -> list[tuple[int, str]]: ...
