"""One write-ahead-log record: its layout on disk, encoded and decoded.

Segment format 3, written now (all integers little-endian):

    Record =>
        Length       u32  bytes in the body (everything after CRC)
        CRC          u32  CRC-32 of the body
        body =>
            LSN          u64  sequence number, consecutive across the whole log
            Kind         u8   LINES 0, ARROW 1, TOMBSTONE 2
            Flags        u8   bit 0 KEYED: the request carried an Idempotency-Key; other bits 0, ignored
            TableLength  u16
            Count        u32  lines (LINES), rows (ARROW), 0 (TOMBSTONE)
            MetaLength   u32
            Table        TableLength bytes, UTF-8; empty for a TOMBSTONE
            Meta         MetaLength bytes: JSON about the request (its key, receipt and reply), or empty
            Spans        LINES only: Count x 2 int64, each line's start and end in Data
            Data         the rest of the body: the lines back to back (LINES), an Arrow IPC
                         stream of one record batch (ARROW), nothing (TOMBSTONE)

An HTTP request is always one record, whole. A TOMBSTONE stands for a
record that was unreadable and moved to the dead-letter store, so the
sequence stays whole.

Segment formats 1 and 2 (read, replayed and repaired; never written): the
same Length and CRC, then a body of LSN u64 | TableLength u16 | Count u32 |
MetaLength u32 | Table | Meta | Spans | Data, with no kind and no flags. A
record with no table is a tombstone, and a meta holding `"key":` was a keyed
request: `decode_v2_body` derives the kind and the flag from that, and is
the only place that looks.
"""
from __future__ import annotations

import struct
import sys
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

VERSION = 3  # the segment format whose records this module writes
PREFIX = struct.Struct("<II")  # Length, CRC
BODY_HEAD = struct.Struct("<QBBHII")  # LSN, Kind, Flags, TableLength, Count, MetaLength
BODY_HEAD_V2 = struct.Struct("<QHII")  # segment formats 1 and 2: LSN, TableLength, Count, MetaLength
MAX_BODY = 1 << 31

LINES, ARROW, TOMBSTONE = 0, 1, 2
KIND_NAMES = {LINES: "lines", ARROW: "arrow", TOMBSTONE: "tombstone"}
KEYED = 0x01

KEY_MARK = b'"key":'  # formats 1 and 2 only: in a keyed request's meta
NO_SPANS = np.zeros(0, np.int64)


@dataclass
class Record:
    lsn: int
    table: str
    spans: np.ndarray | None  # LINES: int64 [start0, end0, ...] into data; empty for other kinds
    data: bytes
    meta: bytes = b""  # JSON about the request the events came in, or empty
    kind: int = LINES
    flags: int = 0
    rows: int = 0  # ARROW: rows in the batch

    @property
    def keyed(self) -> bool:
        return bool(self.flags & KEYED)

    @property
    def lines(self) -> int:
        """Lines in a LINES record (0 for other kinds)."""
        return len(self.spans) // 2 if self.spans is not None else 0

    @property
    def events(self) -> int:
        return self.rows if self.kind == ARROW else self.lines

    def line(self, i: int) -> bytes:
        return self.data[self.spans[2 * i]:self.spans[2 * i + 1]]

    def batch(self) -> pa.RecordBatch:
        """An ARROW record's batch, read back from its IPC stream."""
        if self.kind != ARROW:
            raise ValueError(f"lsn {self.lsn} is a {KIND_NAMES[self.kind]} record, not an arrow one")
        return pa.ipc.open_stream(pa.py_buffer(self.data)).read_next_batch()


def is_tombstone(record: Record) -> bool:
    return record.kind == TOMBSTONE


# encoding: always the newest layout

def body_parts(lsn: int, kind: int, flags: int, table: str, count: int, meta, spans_bytes: bytes, data) -> list:
    """A record as the pieces to write, with the CRC computed across them."""
    name = table.encode()
    meta = bytes(meta)
    head = BODY_HEAD.pack(lsn, kind, flags, len(name), count, len(meta)) + name + meta
    data = memoryview(data).cast("B")
    crc = zlib.crc32(data, zlib.crc32(spans_bytes, zlib.crc32(head)))
    length = len(head) + len(spans_bytes) + len(data)
    return [PREFIX.pack(length, crc), head, spans_bytes, data]


def record_parts(lsn: int, table: str, spans, data, meta: bytes = b"", flags: int = 0) -> list:
    """A LINES record's pieces. `spans`: an int64 array, or a buffer's
    memoryview of them in the machine's order (written as it is where that
    is little-endian: no copy)."""
    if isinstance(spans, memoryview):
        count = spans.nbytes // 16
        spans_bytes = spans.cast("B") if sys.byteorder == "little" else np.frombuffer(spans, "=i8").astype("<i8").tobytes()
    else:
        count = len(spans) // 2
        spans_bytes = spans.astype("<i8", copy=False).tobytes()
    return body_parts(lsn, LINES, flags, table, count, meta, spans_bytes, data)


def batch_record_parts(lsn: int, table: str, batch: pa.RecordBatch, meta: bytes = b"", flags: int = 0) -> list:
    """An ARROW record's pieces: the batch as an IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return body_parts(lsn, ARROW, flags, table, batch.num_rows, meta, b"", sink.getvalue())


def tombstone_parts(lsn: int) -> list:
    return body_parts(lsn, TOMBSTONE, 0, "", 0, b"", b"", b"")


def parts_of(record: Record) -> list:
    """Any decoded record, of any format, as the pieces of its newest layout."""
    if record.kind == TOMBSTONE:
        return tombstone_parts(record.lsn)
    if record.kind == ARROW:
        return body_parts(record.lsn, ARROW, record.flags, record.table, record.rows, record.meta, b"", record.data)
    return record_parts(record.lsn, record.table, record.spans, record.data, record.meta, record.flags)


def encode_record(lsn: int, table: str, spans: np.ndarray, data, meta: bytes = b"", flags: int = 0) -> bytes:
    return b"".join(bytes(part) for part in record_parts(lsn, table, spans, data, meta, flags))


# decoding: the layout of the segment's format version

def decode_body(body: bytes, version: int = VERSION) -> Record:
    """A record from its body (CRC already checked). Raises struct.error,
    UnicodeDecodeError or ValueError when the body does not hold together."""
    if version < 3:
        return decode_v2_body(body)
    lsn, kind, flags, name_length, count, meta_length = BODY_HEAD.unpack_from(body)
    if kind not in KIND_NAMES:
        raise ValueError(f"unknown record kind {kind}")
    offset = BODY_HEAD.size
    table = body[offset:offset + name_length].decode()
    offset += name_length
    meta = body[offset:offset + meta_length]
    offset += meta_length
    spans = NO_SPANS
    if kind == LINES:
        spans = np.frombuffer(body, "<i8", 2 * count, offset)
        offset += 16 * count
    if offset > len(body):
        raise ValueError("record shorter than its header says")
    return Record(lsn, table, spans, body[offset:], meta, kind, flags, count if kind == ARROW else 0)


def decode_v2_body(body: bytes) -> Record:
    """A record of segment format 1 or 2: no kind, no flags."""
    lsn, name_length, lines, meta_length = BODY_HEAD_V2.unpack_from(body)
    offset = BODY_HEAD_V2.size
    table = body[offset:offset + name_length].decode()
    offset += name_length
    meta = body[offset:offset + meta_length]
    offset += meta_length
    spans = np.frombuffer(body, "<i8", 2 * lines, offset)
    offset += 16 * lines
    if offset > len(body):
        raise ValueError("record shorter than its header says")
    kind = TOMBSTONE if not table else LINES
    return Record(lsn, table, spans, body[offset:], meta, kind, KEYED if KEY_MARK in meta else 0)


def body_head_size(version: int = VERSION) -> int:
    return BODY_HEAD.size if version >= 3 else BODY_HEAD_V2.size


def claimed_events(body: bytes, version: int = VERSION) -> tuple[int, int] | None:
    """(lsn, events) that a damaged record's head still says it held, unverified."""
    try:
        if version < 3:
            lsn, _, events, _ = BODY_HEAD_V2.unpack_from(body)
        else:
            lsn, _, _, _, events, _ = BODY_HEAD.unpack_from(body)
    except struct.error:
        return None
    return lsn, events


def events_in(body: bytes, version: int = VERSION) -> str:
    claimed = claimed_events(body, version)
    return "" if claimed is None else f" (its head says lsn {claimed[0]}, {claimed[1]} events; unverified)"
