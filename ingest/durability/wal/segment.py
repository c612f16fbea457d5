"""Segments on disk: scanning, mending and the gaps between them. Recovery
at start-up and the offline `ingest wal` commands go through the same
functions here.

A segment is DIR/wal/segment-{n}.wal, n counted up from 1 (ordered by its
number, not by string), and starts with a header:

    Header (24 bytes) =>
        Magic     9 bytes  b"INGESTWAL"
        Version   u8       3 (records with kind and flags); 2 and 1 are read
        Padding   6 bytes
        FirstLsn  u64      the lsn its first record gets (version 1: absent, the header is 16 bytes)

then records back to back (record.py).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ingest.durability.wal.files import OS, Files
from ingest.durability.wal.record import (
    MAX_BODY, PREFIX, TOMBSTONE, VERSION, Record, body_head_size, claimed_events, decode_body, events_in, parts_of,
)

MAGIC = b"INGESTWAL"
READABLE_VERSIONS = (1, 2, 3)
VERSION_1_HEADER = 16  # magic, version, padding: segments written before lsns went into the header
HEADER_TAIL = struct.Struct("<6xQ")  # padding, the first lsn of the segment
HEADER_SIZE = len(MAGIC) + 1 + HEADER_TAIL.size  # 24 bytes


def segment_header(first_lsn: int) -> bytes:
    return MAGIC + bytes([VERSION]) + HEADER_TAIL.pack(first_lsn)


def segment_number(path: Path) -> int:
    return int(path.stem.removeprefix("segment-"))


def segment_paths(directory: Path) -> list[Path]:
    """Segments in log order: by their number, never by string."""
    found = [p for p in directory.glob("segment-*.wal") if p.stem.removeprefix("segment-").isdigit()]
    return sorted(found, key=segment_number)


@dataclass
class Damage:
    """What reading a segment found wrong."""

    segment: Path
    offset: int
    reason: str
    raw: bytes = b""  # the bytes that could not be read as records (corrupt records only)
    torn_tail: bool = False
    kept: bool = False  # set once the damage is safe in the dead-letter store
    claimed: tuple[int, int] | None = None  # (lsn, events) a damaged record's head says, unverified


@dataclass
class SegmentScan:
    path: Path
    records: list[Record] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    good_length: int = 0  # bytes up to the end of the last good record
    first_lsn: int | None = None  # from the header (version 2 on): the lsn its first record got
    version: int | None = None  # the segment format, when the header could be read

    @property
    def corrupt(self) -> list[Damage]:
        """Unreadable records (not a torn tail): they go to the dead-letter store."""
        return [d for d in self.damage if not d.torn_tail]

    @property
    def torn(self) -> bool:
        return any(d.torn_tail for d in self.damage)


def scan_segment(path: Path, files: Files = OS) -> SegmentScan:
    """Reads every record it can; never raises on bad content."""
    scan = SegmentScan(path)
    content = files.read(path)
    if len(content) < VERSION_1_HEADER or content[:len(MAGIC)] != MAGIC:
        if content.strip(b"\0"):
            scan.damage.append(Damage(path, 0, "segment header missing or not an ingest WAL", raw=content))
        else:
            scan.damage.append(Damage(path, 0, "empty segment (created, never written)", torn_tail=True))
        return scan
    version = content[len(MAGIC)]
    if version == 1:
        offset = VERSION_1_HEADER
    elif version in READABLE_VERSIONS and len(content) >= HEADER_SIZE:
        scan.first_lsn = HEADER_TAIL.unpack_from(content, len(MAGIC) + 1)[0]
        offset = HEADER_SIZE
    else:
        scan.damage.append(Damage(path, 0, f"segment format version {version} is not {VERSION}", raw=content))
        return scan
    scan.version = version
    scan.good_length = offset
    smallest = body_head_size(version)
    size = len(content)
    while offset < size:
        if size - offset < PREFIX.size:
            scan.damage.append(Damage(path, offset, "torn record prefix at the end", torn_tail=True))
            break
        length, crc = PREFIX.unpack_from(content, offset)
        end = offset + PREFIX.size + length
        if length < smallest or length > MAX_BODY:
            scan.damage.append(Damage(path, offset, f"record length {length} is impossible; rest of segment unreadable",
                                      raw=content[offset:]))
            break
        if end > size:
            scan.damage.append(Damage(path, offset, "torn record at the end", torn_tail=True))
            break
        body = content[offset + PREFIX.size:end]
        if zlib.crc32(body) != crc:
            scan.damage.append(Damage(path, offset, "record checksum mismatch" + events_in(body, version), raw=body,
                                      claimed=claimed_events(body, version)))
        else:
            try:
                scan.records.append(decode_body(body, version))
            except (struct.error, UnicodeDecodeError, ValueError) as exc:
                scan.damage.append(Damage(path, offset, f"record body unreadable: {exc}", raw=body,
                                          claimed=claimed_events(body, version)))
        offset = scan.good_length = end
    return scan


@dataclass
class Gap:
    """Sequence numbers missing from the log: a deleted or truncated segment,
    records that could not be read."""

    after: Path  # the segment the gap follows
    first_lsn: int
    last_lsn: int
    missing_segments: tuple = ()  # segment numbers absent between two present ones

    @property
    def reason(self) -> str:
        count = self.last_lsn - self.first_lsn + 1
        segments = (f"; segment(s) {', '.join(map(str, self.missing_segments))} are missing"
                    if self.missing_segments else "")
        return (f"{count} record(s) lost from the log, lsn {self.first_lsn}..{self.last_lsn}, after "
                f"{self.after.name}{segments}: a segment was deleted or cut short")


def sequence_gaps(scans: list[SegmentScan]) -> list[Gap]:
    """Where the log's consecutive lsns jump, across and within segments.
    A record whose checksum failed accounts for one missing lsn; the
    records after a torn tail were never acknowledged (an ack waits for the
    fsync), but a later segment that starts further on shows a cut."""
    gaps: list[Gap] = []
    expected = None  # the lsn the next record must have
    previous: SegmentScan | None = None
    for scan in scans:
        unreadable = len(scan.corrupt)
        lsns = ([scan.first_lsn] if scan.first_lsn is not None else []) + [r.lsn for r in scan.records]
        for index, lsn in enumerate(lsns):
            if expected is not None and lsn > expected:
                explained = min(unreadable, lsn - expected)
                unreadable -= explained
                if lsn - expected > explained:
                    absent = ()
                    if previous is not None and index == 0:
                        absent = tuple(range(segment_number(previous.path) + 1, segment_number(scan.path)))
                    gaps.append(Gap((previous or scan).path if index == 0 else scan.path,
                                    expected + explained, lsn - 1, absent))
            is_header = index == 0 and scan.first_lsn is not None
            expected = max(expected or 0, lsn if is_header else lsn + 1)
        previous = scan
    return gaps


# mending: the same steps at start-up and in `ingest wal repair`

def truncate_torn_tail(scan: SegmentScan, files: Files = OS) -> None:
    """Cuts a torn record off the end: it was never acknowledged."""
    if scan.torn and scan.good_length >= VERSION_1_HEADER:
        files.truncate_file(scan.path, scan.good_length)


def drop_kept_damage(scan: SegmentScan, files: Files = OS) -> bool:
    """Once every unreadable record is safe elsewhere (`kept`), rewrites the
    segment without them; True when it did."""
    corrupt = scan.corrupt
    if not corrupt or not all(d.kept for d in corrupt):
        return False
    rewrite_segment(scan, files)
    return True


def rewrite_segment(scan: SegmentScan, files: Files = OS) -> None:
    """Replaces a segment, atomically, by one in the newest format holding
    only its readable records, and a tombstone in place of each record that
    was not, so the sequence stays whole and only real losses show."""
    damaged = len(scan.corrupt)
    first_lsn = scan.first_lsn if scan.first_lsn is not None else (scan.records[0].lsn if scan.records else 0)
    records, expected = [], first_lsn
    for record in scan.records:
        while damaged and expected < record.lsn:
            records.append(Record(expected, "", None, b"", kind=TOMBSTONE))
            expected += 1
            damaged -= 1
        records.append(record)
        expected = record.lsn + 1
    records.extend(Record(expected + i, "", None, b"", kind=TOMBSTONE) for i in range(damaged))
    files.replace_file(scan.path, [segment_header(first_lsn), *(part for r in records for part in parts_of(r))])


def repair(directory: Path, keep_damage, files: Files = OS) -> list[Damage]:
    """Mends a log offline: torn tails are truncated, unreadable records are
    handed to `keep_damage(damage)` and dropped. Returns what was found."""
    found = []
    for path in segment_paths(directory):
        scan = scan_segment(path, files)
        found.extend(scan.damage)
        truncate_torn_tail(scan, files)
        for damage in scan.corrupt:
            keep_damage(damage)
            damage.kept = True
        drop_kept_damage(scan, files)
    return found
