"""An input file read as a series of chunks, each one batch: a stretch of
the file with its place in it (NDJSON: byte offsets in the decompressed
stream; a JSON array: element indexes; Parquet: row indexes). A chunk of
lines always ends at the end of a line, so a resumed import starts at a
chunk's end and reads the same lines again. Chunks are cut by size in the
reader's thread; nothing here touches the sink."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.backfill.inputs import JSON_ARRAY, NDJSON, PARQUET, InputError, InputFile
from ingest.hotpath.buffer import BatchBuffer, LineFramer, split_json_array

SKIP_BLOCK = 16 << 20  # bytes read at a time while skipping what an earlier run imported
READ_BLOCK = 4 << 20  # bytes read at a time while framing
MAX_LINE_BYTES = 1 << 30  # a file's lines are not cut short (the server's --max-line-bytes is for sockets)
BLANK = b" \t\r"


@dataclass
class Chunk:
    start: int  # its place in the file: first byte, element or row
    end: int  # just past its last
    events: int
    lines: BatchBuffer | None = None  # framed lines (standalone)
    body: bytes | None = None  # the lines as NDJSON, as they are in the file (through a server)
    rows: pa.RecordBatch | None = None  # Parquet rows
    origin: Callable[[int], str] | None = None  # line index -> "file:line"
    read_bytes: int = 0  # of the file on disk, read so far: what progress counts


@dataclass
class ReadOptions:
    chunk_bytes: int  # a chunk holds at most about this many bytes of JSON
    max_events: int  # and at most this many events
    frame: bool  # frame lines for the encoder (standalone) or keep the NDJSON text (through a server)


def chunks(file: InputFile, start: int, options: ReadOptions, stream=None,
           first_end: int | None = None) -> Iterator[Chunk]:
    """The file's chunks from `start` (where an earlier run stopped) to its
    end; with `first_end`, the first chunk ends exactly there (a batch read
    again as it was). `stream`: stdin's, already opened."""
    if file.format == PARQUET:
        try:
            yield from _parquet_chunks(file, start, options, first_end)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{file.name}: cannot read it: {first_line_of(exc)}") from None
        return
    raw = pa.PythonFile(stream, mode="r") if stream is not None else pa.OSFile(file.path, "rb")
    try:
        decompressed = pa.CompressedInputStream(raw, file.compression) if file.compression else raw
        # progress counts bytes of the file on disk; of stdin, the bytes read from it (after decompression)
        position = (lambda: raw.tell()) if stream is None else None
        if file.format == JSON_ARRAY:
            yield from _array_chunks(file, decompressed, start, options, position, first_end)
        elif options.frame:
            yield from _framed_chunks(file, decompressed, start, options, position, first_end)
        else:  # through a server, which has no batch of ours to rebuild: first_end does not arise
            yield from _ndjson_chunks(file, decompressed, start, options, position)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{file.name}: cannot read it: {first_line_of(exc)}") from None
    finally:
        raw.close()


def first_line_of(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _framed_chunks(file: InputFile, stream, start: int, options: ReadOptions, position,
                   first_end: int | None) -> Iterator[Chunk]:
    """NDJSON framed as it is read, block by block, straight into each
    chunk's buffer (one copy of each line); a chunk ends when its buffer is
    full (max_events, chunk_bytes), at `first_end`, or at the end of the file."""
    line = 1 + _skip(stream, start, file.name)  # the number of the next line to complete
    framer = LineFramer(MAX_LINE_BYTES)
    block, at, base = b"", 0, start  # the block being framed, where in it, and its place in the file
    eof = False
    tail_nonblank = False  # the line the framer holds unfinished has more than blanks so far
    while not eof:
        exact = first_end is not None and base + at == start
        lines = BatchBuffer(0, 0) if exact else BatchBuffer(options.max_events, options.chunk_bytes)
        chunk_start, first_line, numbers = base + at, line, None
        while not lines.is_full:
            if at == len(block):
                base += len(block)
                want = min(READ_BLOCK, first_end - base) if exact else READ_BLOCK
                block, at = (stream.read(want) if want > 0 else b""), 0
                if want == 0:  # the earlier run's batch is whole again
                    if framer.pending_bytes:  # it ended at the end of the file, after a line with no newline
                        if stream.read(1):
                            raise InputError(f"{file.name}: byte {first_end}, where a batch of the earlier run "
                                             "ended, is not at the end of a line")
                        eof = True
                        if framer.finish(lines) and numbers is not None:
                            numbers.append(line)
                    break
                if not block:
                    eof = True
                    if framer.finish(lines) and numbers is not None:  # its last line, with no newline after it
                        numbers.append(line)
                    break
            carried, seen, events = tail_nonblank, framer.lines_seen, lines.events
            stop = framer.feed(block, at, lines)
            newlines = block.count(b"\n", at, stop)
            if numbers is None and framer.lines_seen - seen != newlines:  # blank lines: number each event
                numbers = list(range(first_line, first_line + events))
            if numbers is not None:
                numbers += [line + j for j, text in enumerate(block[at:stop].split(b"\n")[:newlines])
                            if text.strip(BLANK) or (j == 0 and carried)]
            if framer.pending_bytes:  # a line goes on into the next block
                last = block.rfind(b"\n", at, stop)
                tail_nonblank = (carried and last < 0) or bool(block[max(last + 1, at):stop].strip(BLANK))
            else:
                tail_nonblank = False
            line += newlines
            at = stop
        end = base + at
        if exact and end != first_end:
            raise InputError(f"{file.name}: the file ends before byte {first_end}, where a batch of the earlier run "
                             "ended")
        if not lines.events and end == chunk_start:
            return
        yield Chunk(chunk_start, end, lines.events, lines=lines, read_bytes=position() if position else end,
                    origin=_numbered_origin(file.name, first_line, numbers))


def _numbered_origin(name: str, first_line: int, numbers: list | None) -> Callable[[int], str]:
    if numbers is None:
        return lambda index: f"{name}:{first_line + index}"
    return lambda index: f"{name}:{numbers[index]}"


def _ndjson_chunks(file: InputFile, stream, start: int, options: ReadOptions, position) -> Iterator[Chunk]:
    """NDJSON as text, to send as it is. A chunk is the `chunk_bytes` from
    its start cut after their last newline (a line longer than that: up to
    its end), so it depends on its start alone: a resumed run cuts the same
    chunks, and sends them under the same idempotency keys."""
    size = options.chunk_bytes
    line = 1 + _skip(stream, start, file.name)  # the line number of the first line of the next chunk
    offset, data = start, b""
    while True:
        if len(data) < size:
            data += _read_full(stream, size - len(data))
        if not data:
            return
        if len(data) < size:  # the end of the file
            cut = len(data)
        else:
            cut = data.rfind(b"\n", 0, size) + 1
            while cut == 0:  # one line longer than a chunk: read on until it ends
                more = _read_full(stream, size)
                searched, data = len(data), data + more
                newline = data.find(b"\n", searched)
                cut = newline + 1 if newline >= 0 else len(data) if not more else 0
        piece, data = data[:cut], data[cut:]
        count = piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1)
        yield Chunk(offset, offset + len(piece), count, body=piece, origin=_text_origin(file.name, line, piece),
                    read_bytes=position() if position else offset + len(piece))
        offset += len(piece)
        line += count


def _read_full(stream, size: int) -> bytes:
    """`size` bytes, fewer only at the end of the stream (a pipe may hand back less at a time)."""
    data = stream.read(size)
    while data and len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            break
        data += more
    return data


def _text_origin(name: str, first_line: int, piece: bytes) -> Callable[[int], str]:
    """Line index among the chunk's events (blank lines are not events) -> "file:line"."""
    numbers: list[int] = []

    def origin(index: int) -> str:
        if not numbers:
            numbers.extend(number for number, text in enumerate(piece.split(b"\n")) if text.strip(BLANK))
        return f"{name}:{first_line + numbers[min(index, len(numbers) - 1)]}" if numbers else name
    return origin


def _skip(stream, count: int, name: str) -> int:
    """Reads past the first `count` bytes (decompressed); returns the
    newlines among them, which number the lines after."""
    newlines = 0
    left = count
    while left > 0:
        block = stream.read(min(SKIP_BLOCK, left))
        if not block:
            raise InputError(f"{name}: the file ends before byte {count}, where the earlier run had got to")
        newlines += block.count(b"\n")
        left -= len(block)
    return newlines


def _array_chunks(file: InputFile, stream, start: int, options: ReadOptions, position,
                  first_end: int | None) -> Iterator[Chunk]:
    """A JSON array is read whole (it has no line ends to cut at), then handed out in chunks of elements."""
    body = stream.read()
    elements = BatchBuffer()
    try:
        split_json_array(body, elements)
    except ValueError as exc:
        raise InputError(f"{file.name}: not a valid JSON array: {exc}") from None
    read_bytes = position() if position else len(body)
    del body
    index = start
    while index < elements.events:
        if first_end is not None and index == start:  # exactly the elements of the earlier run's batch
            lines = BatchBuffer(first_end - start, 0)
        else:
            lines = BatchBuffer(options.max_events, options.chunk_bytes)
        end = lines.extend(elements, index, None)  # at least one element, however large
        first = index
        # through a server: one element a line (a newline inside an element can only be JSON whitespace)
        body = None if options.frame else b"\n".join(
            lines.line(i).replace(b"\n", b" ").replace(b"\r", b" ") for i in range(lines.events)) + b"\n"
        yield Chunk(first, end, lines.events, lines=lines if options.frame else None, body=body,
                    origin=lambda i, first=first: f"{file.name}[{first + i}]", read_bytes=read_bytes)
        index = end


def _parquet_chunks(file: InputFile, start: int, options: ReadOptions, first_end: int | None) -> Iterator[Chunk]:
    try:
        parquet = pq.ParquetFile(file.path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{file.name}: not a readable Parquet file: {first_line_of(exc)}") from None
    with parquet:
        yield from _row_groups(file, parquet, start, options, first_end)


def _row_groups(file: InputFile, parquet, start: int, options: ReadOptions, first_end: int | None) -> Iterator[Chunk]:
    total = parquet.metadata.num_rows or 1
    row = 0
    for group in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if row + rows <= start:
            row += rows
            continue
        table = parquet.read_row_group(group)
        skip = max(0, start - row)
        while skip < rows:
            first = row + skip
            size = first_end - first if first_end is not None and first == start else options.max_events
            batch = table.slice(skip, size).combine_chunks().to_batches()[0]  # one chunk per column: one batch
            skip += batch.num_rows
            yield Chunk(first, first + batch.num_rows, batch.num_rows, rows=batch,
                        read_bytes=file.size * (row + skip) // total)
        row += rows
