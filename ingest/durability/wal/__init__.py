"""The write-ahead log: accepted events survive a crash.

    record.py   one record's layout (format 3: kind and flags), encode/decode, the format 1/2 decoder
    segment.py  segment header, scan, torn-tail truncation, rewrite with tombstones, repair, gaps
    writer.py   WriteAheadLog: append, group commit and fsync modes, rotation, settle and cleanup
    files.py    the file operations all of them make (the real OS unless a test says otherwise)

Idempotency keys that outlive their segments are in ingest/durability/keys.py.
"""
from __future__ import annotations

from ingest.durability.keys import KEYS_FILE, KeysFile
from ingest.durability.wal.files import IOV_MAX, OS, Files
from ingest.durability.wal.record import (
    ARROW, BODY_HEAD, BODY_HEAD_V2, KEYED, KIND_NAMES, LINES, MAX_BODY, PREFIX, TOMBSTONE,
    VERSION, Record, batch_record_parts, body_parts, claimed_events, decode_body, decode_v2_body, encode_record, events_in,
    is_tombstone, parts_of, record_parts, tombstone_parts,
)
from ingest.durability.wal.segment import (
    HEADER_SIZE, HEADER_TAIL, MAGIC, READABLE_VERSIONS, VERSION_1_HEADER, Damage, Gap, SegmentScan, drop_kept_damage,
    repair, rewrite_segment, scan_segment, segment_header, segment_number, segment_paths, sequence_gaps,
    truncate_torn_tail,
)
from ingest.durability.wal.writer import FSYNC_MODES, RETRY_SECONDS, WalUnavailable, WriteAheadLog


__all__ = [
    "ARROW", "BODY_HEAD", "BODY_HEAD_V2", "FSYNC_MODES", "HEADER_SIZE", "HEADER_TAIL", "IOV_MAX", "KEYED", "KEYS_FILE",
    "KIND_NAMES", "LINES", "MAGIC", "MAX_BODY", "OS", "PREFIX", "READABLE_VERSIONS", "RETRY_SECONDS",
    "TOMBSTONE", "VERSION", "VERSION_1_HEADER", "body_parts", "Damage", "Files", "Gap", "KeysFile", "Record",
    "SegmentScan", "WalUnavailable", "WriteAheadLog", "batch_record_parts", "claimed_events", "decode_body",
    "decode_v2_body", "drop_kept_damage", "encode_record", "events_in", "is_tombstone",
    "parts_of", "record_parts", "repair", "rewrite_segment", "scan_segment", "segment_header", "segment_number",
    "segment_paths", "sequence_gaps", "tombstone_parts", "truncate_torn_tail",
]
