"""BatchBuffer, SealedBatch, LineFramer and split_json_array: every test runs on
the compiled module and on the pure-Python reference, and a differential
test holds the two to identical results on random streams."""
from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest.hotpath._buffer as compiled
import ingest.hotpath.reference.buffer as reference

IMPLEMENTATIONS = {"cython": compiled, "python": reference}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def mod(request):
    return IMPLEMENTATIONS[request.param]


def lines_of(batch) -> list[bytes]:
    return [batch.line(i) for i in range(batch.events)]


def expected_lines(stream: bytes, max_line_bytes: int = 1 << 20) -> list[bytes]:
    """The obvious framing: split at "\\n", drop one trailing "\\r", skip blank
    lines and lines longer than the limit (the last piece may be unterminated)."""
    lines = []
    for line in stream.split(b"\n"):
        line = line[:-1] if line.endswith(b"\r") else line
        if line.strip(b" \t\r") and len(line) <= max_line_bytes:
            lines.append(line)
    return lines


def frame(mod, chunks, max_line_bytes=1 << 20, event_limit=0, byte_limit=0):
    """Feeds every chunk, sealing whenever the buffer is full; returns the
    lines of all batches in order, the batches' sizes and the framer."""
    framer = mod.LineFramer(max_line_bytes)
    buffer = mod.BatchBuffer(event_limit, byte_limit)
    batches = []
    for chunk in chunks:
        position = 0
        while position < len(chunk):
            position = framer.feed(chunk, position, buffer)
            if buffer.is_full:
                batches.append(buffer.seal())
    framer.finish(buffer)
    batches.append(buffer.seal())
    lines = [line for batch in batches for line in lines_of(batch)]
    return lines, [batch.events for batch in batches], framer


# --- BatchBuffer -------------------------------------------------------------


def test_empty_buffer(mod):
    buffer = mod.BatchBuffer()
    assert (buffer.events, buffer.nbytes, buffer.is_full) == (0, 0, False)
    assert bytes(buffer.data()) == b"" and list(buffer.spans()) == []
    with pytest.raises(IndexError):
        buffer.line(0)


def test_append_line_spans_line_data_agree(mod):
    buffer = mod.BatchBuffer()
    lines = [b'{"a":1}', b"", b"x" * 3000, bytearray(b"[1,2]"), memoryview(b"\xff\x00 z")]
    lines += [b"%d" % i for i in range(100)]  # past the inline storage, lines and bytes
    for line in lines:
        buffer.append_line(line)
    data, spans = buffer.data(), buffer.spans()
    assert buffer.events == len(lines) and buffer.nbytes == sum(len(line) for line in lines)
    assert spans.format == "q" and spans.itemsize == 8 and len(spans) == 2 * len(lines)
    assert data.format == "B" and data.readonly and spans.readonly
    assert bytes(data) == b"".join(bytes(line) for line in lines)
    for i, line in enumerate(lines):
        assert buffer.line(i) == bytes(line) == bytes(data[spans[2 * i]:spans[2 * i + 1]])
    assert buffer.line(-1) == b"99"
    with pytest.raises(IndexError):
        buffer.line(len(lines))
    with pytest.raises(TypeError):
        data[0] = 1
    assert np.frombuffer(spans, dtype=np.int64)[-1] == buffer.nbytes


def test_limits_and_is_full(mod):
    buffer = mod.BatchBuffer(event_limit=2, byte_limit=10)
    assert (buffer.event_limit, buffer.byte_limit) == (2, 10)
    buffer.append_line(b"abc")
    assert not buffer.is_full
    buffer.append_line(b"d")
    assert buffer.is_full  # by events
    buffer.event_limit = 0
    assert not buffer.is_full
    buffer.append_line(b"efghij")
    assert buffer.is_full  # by bytes: 10 >= 10
    buffer.byte_limit = 0
    assert not buffer.is_full


def test_clear_keeps_limits(mod):
    buffer = mod.BatchBuffer(5, 100)
    for _ in range(50):
        buffer.append_line(b"x" * 100)
    buffer.clear()
    assert (buffer.events, buffer.nbytes, buffer.event_limit, buffer.byte_limit) == (0, 0, 5, 100)
    buffer.append_line(b"again")
    assert lines_of(buffer) == [b"again"] and list(buffer.spans()) == [0, 5]


@pytest.mark.parametrize("count,size", [(3, 10), (500, 100)], ids=["inline", "malloc"])
def test_seal_hands_over_and_leaves_buffer_reusable(mod, count, size):
    buffer = mod.BatchBuffer(event_limit=7, byte_limit=1 << 30)
    lines = [b"%05d" % i + b"y" * (size - 5) for i in range(count)]
    for line in lines:
        buffer.append_line(line)
    sealed = buffer.seal()
    data, spans = sealed.data(), sealed.spans()
    assert type(sealed).__name__ == "SealedBatch" and isinstance(sealed, mod.SealedBatch)
    assert (sealed.events, sealed.nbytes) == (count, count * size)
    assert (buffer.events, buffer.nbytes, buffer.event_limit, buffer.byte_limit) == (0, 0, 7, 1 << 30)
    # the buffer goes on receiving; the sealed lines must not move
    for i in range(count + 50):
        buffer.append_line(b"z" * (size + 3))
    buffer.clear()
    buffer.append_line(b"new")
    assert bytes(data) == b"".join(lines) and lines_of(sealed) == lines
    assert list(spans) == [offset for i in range(count) for offset in (i * size, (i + 1) * size)]
    assert lines_of(buffer) == [b"new"]
    # views outlive the sealed batch object itself, and reach pyarrow as they are
    arrow = pa.py_buffer(sealed.data())
    del sealed, data
    assert arrow.to_pybytes() == b"".join(lines)


def test_seal_empty(mod):
    sealed = mod.BatchBuffer().seal()
    assert (sealed.events, sealed.nbytes, bytes(sealed.data()), list(sealed.spans())) == (0, 0, b"", [])


def test_views_block_changes_until_released(mod):
    buffer = mod.BatchBuffer()
    buffer.append_line(b"one")
    for export in (buffer.data, buffer.spans):
        view = export()
        for change in (lambda: buffer.append_line(b"two"), lambda: buffer.append_line(b""),
                       buffer.clear, buffer.seal):
            with pytest.raises(BufferError, match="release the view"):
                change()
        assert lines_of(buffer) == [b"one"]  # nothing moved
        view.release()
    buffer.append_line(b"two")
    with buffer.data() as view:
        assert bytes(view) == b"onetwo"
    assert lines_of(buffer.seal()) == [b"one", b"two"]


def test_extend_skips_rejected_and_stops_when_full(mod):
    src = mod.BatchBuffer()
    for i in range(8):
        src.append_line(b"line%d" % i)
    rejected = [1, 4, 5]
    dst = mod.BatchBuffer(event_limit=2)
    got = []
    position, calls = 0, 0
    while position < src.events:
        position = dst.extend(src, position, rejected)
        calls += 1
        got += lines_of(dst.seal())
        assert calls < 10
    assert got == [b"line0", b"line2", b"line3", b"line6", b"line7"]
    assert calls == 3
    # stops right after the line that fills the buffer, by bytes
    dst = mod.BatchBuffer(byte_limit=10)
    assert dst.extend(src, 0, []) == 2 and lines_of(dst) == [b"line0", b"line1"]
    assert dst.extend(src, 2, None) == 2  # already full: nothing consumed
    dst.byte_limit = 0
    assert dst.extend(src, 2, (2, 7)) == 8 and dst.events == 6
    assert dst.extend(src, 8) == 8


def test_extend_from_sealed_and_from_itself(mod):
    buffer = mod.BatchBuffer()
    for i in range(40):
        buffer.append_line(b"%d" % i * 500)
    sealed = buffer.seal()
    target = mod.BatchBuffer()
    assert target.extend(sealed, 35, [36]) == 40
    assert lines_of(target) == [b"%d" % i * 500 for i in (35, 37, 38, 39)]
    assert target.extend(target, 0, [0, 1]) == 4  # its own lines, reallocating under itself
    assert lines_of(target)[4:] == [b"%d" % i * 500 for i in (38, 39)]


def test_extend_checks_arguments(mod):
    src, dst = mod.BatchBuffer(), mod.BatchBuffer()
    for i in range(3):
        src.append_line(b"x")
    with pytest.raises(ValueError, match="sorted"):
        dst.extend(src, 0, [1, 0])  # read lazily: an unsorted index is seen once it matters
    for start in (-1, 4):
        with pytest.raises(ValueError, match="outside"):
            dst.extend(src, start, None)
    with pytest.raises(TypeError):
        dst.extend(b"x\ny\n", 0, None)


# --- LineFramer --------------------------------------------------------------

STREAM = b'{"a":1}\n\r\n{"b":"x y"}\r\n  \t \n\n\t\r\n{"c":[1,2]}\r\r\n \n[3]\nlast'


def test_lines_split_at_every_byte_boundary(mod):
    expected = expected_lines(STREAM)
    assert expected == [b'{"a":1}', b'{"b":"x y"}', b'{"c":[1,2]}\r', b"[3]", b"last"]
    for i in range(len(STREAM) + 1):
        for j in range(i, len(STREAM) + 1):
            lines, _, framer = frame(mod, [STREAM[:i], STREAM[i:j], STREAM[j:]])
            assert lines == expected, (i, j)
            assert (framer.lines_seen, framer.too_long, framer.pending_bytes) == (5, 0, 0)


def test_crlf_empty_and_blank_lines(mod):
    framer, out = mod.LineFramer(), mod.BatchBuffer()
    chunk = b"\n\r\n \t\r\na\r\nb\n\r\r\n  x  \n"
    assert framer.feed(chunk, 0, out) == len(chunk)
    assert lines_of(out) == [b"a", b"b", b"  x  "]
    assert framer.lines_seen == 3 and framer.pending_bytes == 0


def test_feed_from_start_and_bytes_likes(mod):
    framer, out = mod.LineFramer(), mod.BatchBuffer()
    assert framer.feed(bytearray(b"skip\nkeep\npart"), 5, out) == 14
    assert framer.feed(memoryview(b"ial\n"), 0, out) == 4
    assert lines_of(out) == [b"keep", b"partial"]
    assert framer.feed(b"abc", 3, out) == 3 and framer.pending_bytes == 0
    for start in (-1, 4):
        with pytest.raises(ValueError, match="outside"):
            framer.feed(b"abc", start, out)


def test_over_long_lines_at_and_past_the_limit(mod):
    framer, out = mod.LineFramer(5), mod.BatchBuffer()
    chunk = b"12345\n123456\n12345\r\n1234\r\r\n      \n"
    framer.feed(chunk, 0, out)
    # a trailing CR does not count; a blank over-long line counts as over-long
    assert lines_of(out) == [b"12345", b"12345", b"1234\r"]
    assert (framer.too_long, framer.lines_seen) == (2, 5)


def test_over_long_line_over_several_chunks(mod):
    good = [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    stream = good[0] + b"\n" + b"A" * 100 + b"\r\n" + good[1] + b"\n" + b"B" * 30 + b"\n" + good[2] + b"\n"
    for size in (1, 3, 7, 16, 40, len(stream)):
        chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
        lines, _, framer = frame(mod, chunks, max_line_bytes=20)
        assert lines == good, size
        assert (framer.too_long, framer.lines_seen, framer.pending_bytes) == (2, 5, 0)


def test_over_long_line_is_not_buffered(mod):
    framer, out = mod.LineFramer(10), mod.BatchBuffer()
    framer.feed(b"ok\n" + b"x" * 9, 0, out)
    assert framer.pending_bytes == 9
    framer.feed(b"x" * 1000, 0, out)
    assert framer.pending_bytes == 0 and framer.too_long == 1  # discarding, counted once
    framer.feed(b"x" * 1000 + b"\nnext", 0, out)
    assert framer.too_long == 1 and framer.pending_bytes == 4
    assert framer.finish(out) == 1 and lines_of(out) == [b"ok", b"next"]


@pytest.mark.parametrize("size", [100, 600, 5000, 200_000], ids=["inline", "malloc", "realloc", "freed"])
def test_lines_longer_than_a_chunk_of_every_size(mod, size):
    # a partial line outgrows the framer's inline tail, is realloc'd, and
    # (past 64 KiB) is freed once emitted; the next partial line starts over
    first, second = b"a" * (size - 1) + b"\r", b"{" + b"b" * size + b"}"
    stream = first + b"\n" + second + b"\n" + b"tail"
    chunks = [stream[i:i + 999] for i in range(0, len(stream), 999)]
    lines, _, framer = frame(mod, chunks)
    assert lines == [first[:-1], second, b"tail"]
    assert (framer.lines_seen, framer.too_long, framer.pending_bytes) == (3, 0, 0)


def test_cr_at_the_limit_split_from_its_newline(mod):
    framer, out = mod.LineFramer(5), mod.BatchBuffer()
    framer.feed(b"12345\r", 0, out)
    framer.feed(b"\n", 0, out)
    framer.feed(b"123456", 0, out)
    framer.feed(b"\n", 0, out)
    assert lines_of(out) == [b"12345"] and framer.too_long == 1


@pytest.mark.parametrize("limits,stops", [((1, 0), [4, 8, 12, 13]), ((0, 5), [8, 13])], ids=["events", "bytes"])
def test_feed_stops_when_full_and_resumes(mod, limits, stops):
    framer, out = mod.LineFramer(), mod.BatchBuffer(*limits)
    chunk = b"abc\ndef\nghi\nj"
    batches, position = [], 0
    for expected_stop in stops:
        position = framer.feed(chunk, position, out)
        assert position == expected_stop
        if out.is_full:
            assert framer.feed(chunk, position, out) == position  # full: consumes nothing
            batches.append(lines_of(out.seal()))
    assert framer.pending_bytes == 1 and framer.finish(out) == 1
    batches.append(lines_of(out.seal()))
    assert [line for batch in batches for line in batch] == [b"abc", b"def", b"ghi", b"j"]
    assert batches[0] == ([b"abc"] if limits[0] else [b"abc", b"def"])


def test_finish(mod):
    framer, out = mod.LineFramer(4), mod.BatchBuffer(event_limit=1)
    assert framer.finish(out) == 0
    framer.feed(b"a\nb\r", 0, out)  # fills out with "a"; "b\r" is still unread
    assert out.is_full and framer.pending_bytes == 0
    out.clear()
    assert framer.feed(b"a\nb\r", 2, out) == 4 and framer.pending_bytes == 2
    out.append_line(b"z")
    assert out.is_full
    assert framer.finish(out) == 1 and lines_of(out) == [b"z", b"b"]  # even into a full buffer
    assert framer.finish(out) == 0 and framer.pending_bytes == 0
    out = mod.BatchBuffer()
    for tail in (b" \t", b"\r", b"toolong"):
        framer.feed(tail, 0, out)
        assert framer.finish(out) == 0
    assert framer.too_long == 1 and out.events == 0
    framer.feed(b"x" * 50, 0, out)  # discarding at the end of the stream
    assert framer.finish(out) == 0 and framer.too_long == 2
    framer.feed(b"ok", 0, out)  # the framer starts afresh after finish
    assert framer.finish(out) == 1 and lines_of(out)[-1] == b"ok"


def test_framer_limits(mod):
    with pytest.raises(ValueError):
        mod.LineFramer(-1)
    assert mod.LineFramer().max_line_bytes == 1 << 20
    framer, out = mod.LineFramer(sys.maxsize), mod.BatchBuffer()  # no overflow at the top
    for size in (5000, 100_000):  # a tail past the inline one, and a large one given back
        framer.feed(b"a" * size, 0, out)
        framer.feed(b"b" * size, 0, out)
        assert framer.pending_bytes == 2 * size
        assert framer.feed(b"\n", 0, out) == 1 and out.line(-1) == b"a" * size + b"b" * size
    framer.feed(b"c", 0, out)
    assert framer.finish(out) == 1 and out.events == 3


def test_export_needs_an_owner():
    with pytest.raises(BufferError):
        memoryview(compiled._Export())


def test_feed_into_buffer_with_live_view(mod):
    framer, out = mod.LineFramer(), mod.BatchBuffer()
    view = out.data()
    assert framer.feed(b"partial", 0, out) == 7  # nothing to append yet: fine
    with pytest.raises(BufferError):
        framer.feed(b" line\n", 0, out)
    view.release()
    assert framer.feed(b" line\n", 0, out) == 6 and lines_of(out) == [b"partial line"]


# --- split_json_array --------------------------------------------------------


def test_split_json_array_elements(mod):
    body = (b'\xef\xbb\xbf \n[ {"a": [1, "]", {"b": "}{"}]} ,\t[[], [ {} ]],\r\n"x\\"]\\\\", '
            b'3.5e1 , null,"\\\\" ,{"q":"\\"}"}  ]  \n')
    out = mod.BatchBuffer(event_limit=1)  # limits are ignored here
    assert mod.split_json_array(body, out) == 7
    assert lines_of(out) == [b'{"a": [1, "]", {"b": "}{"}]}', b"[[], [ {} ]]", b'"x\\"]\\\\"',
                             b"3.5e1", b"null", b'"\\\\"', b'{"q":"\\"}"}']


@pytest.mark.parametrize("body", [b"[]", b" [ \n ] ", b"\xef\xbb\xbf[]"])
def test_split_json_array_empty(mod, body):
    out = mod.BatchBuffer()
    assert mod.split_json_array(body, out) == 0 and out.events == 0


def test_split_json_array_deep_nesting(mod):
    out = mod.BatchBuffer()
    deep = b"[" * 300 + b'"]"' + b"]" * 300
    assert mod.split_json_array(b"[" + deep + b",{}]", out) == 2
    assert lines_of(out) == [deep, b"{}"]


@pytest.mark.parametrize("body,message", [
    (b"", "expected '[' at byte 0, found the end of the body"),
    (b"  \xef\xbb\xbf[]", "expected '[' at byte 2, found byte 0xef"),
    (b'{"a":1}', "expected '[' at byte 0, found '{'"),
    (b"[1, 2", "the array is truncated at byte 5: no closing ']'"),
    (b"[", "the array is truncated at byte 1: no closing ']'"),
    (b"[1,", "the array is truncated at byte 3: no closing ']'"),
    (b"[[1, 2], [3]", "the array is truncated at byte 12: no closing ']'"),
    (b'[{"a": "b]}', "unterminated string starting at byte 7"),
    (b'["\\"]', "unterminated string starting at byte 1"),
    (b"[1, 2,]", "trailing comma before the ']' at byte 6"),
    (b"[1,,2]", "empty element at byte 3"),
    (b"[,1]", "empty element at byte 1"),
    (b"[{]}", "mismatched ']' at byte 2: expected '}'"),
    (b"[[1}]", "mismatched '}' at byte 3: expected ']'"),
    (b"[1}]", "unexpected '}' at byte 2: no '{' is open"),
    (b"[1] x", "unexpected 'x' at byte 4 after the closing ']'"),
    (b"[1]]", "unexpected ']' at byte 3 after the closing ']'"),
    (b"[1][2]", "unexpected '[' at byte 3 after the closing ']'"),
])
def test_split_json_array_errors(mod, body, message):
    out = mod.BatchBuffer()
    out.append_line(b"before")
    with pytest.raises(ValueError) as raised:
        mod.split_json_array(body, out)
    assert str(raised.value) == f"invalid JSON array body: {message}"
    assert lines_of(out) == [b"before"] and out.nbytes == 6  # rolled back


# --- the two implementations agree -------------------------------------------

PIECES = [b"a", b"bc", b"{}", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\n\n", b"xxxxxxxx"]


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), max_size=60),
    cuts=st.lists(st.integers(0, 200), max_size=8),
    max_line_bytes=st.integers(0, 12),
    event_limit=st.integers(0, 4),
    byte_limit=st.integers(0, 20),
)
def test_implementations_agree_on_random_chunkings(pieces, cuts, max_line_bytes, event_limit, byte_limit):
    stream = b"".join(pieces)
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    results = []
    for mod in (compiled, reference):
        lines, sizes, framer = frame(mod, chunks, max_line_bytes, event_limit, byte_limit)
        results.append((lines, sizes, framer.too_long, framer.lines_seen, framer.pending_bytes))
    assert results[0] == results[1]
    assert results[0][0] == expected_lines(stream, max_line_bytes)


JSON_PIECES = [b"[", b"]", b"{", b"}", b",", b" ", b'"', b"\\", b"1", b'"a]"', b'"\\""', b"\xef\xbb\xbf"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(JSON_PIECES), max_size=20))
def test_implementations_agree_on_random_arrays(pieces):
    body = b"".join(pieces)
    results = []
    for mod in (compiled, reference):
        out = mod.BatchBuffer()
        try:
            results.append((mod.split_json_array(body, out), lines_of(out)))
        except ValueError as exc:
            results.append((str(exc), lines_of(out)))
    assert results[0] == results[1]


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), max_size=30),
    rejected=st.lists(st.integers(-2, 32), max_size=8),
    start=st.integers(0, 30),
    event_limit=st.integers(0, 5),
    byte_limit=st.integers(0, 100),
)
def test_implementations_agree_on_extend(sizes, rejected, start, event_limit, byte_limit):
    rejected = sorted(rejected)
    start = min(start, len(sizes))
    results = []
    for mod in (compiled, reference):
        src = mod.BatchBuffer()
        for i, size in enumerate(sizes):
            src.append_line(bytes([65 + i % 26]) * size)
        dst = mod.BatchBuffer(event_limit, byte_limit)
        stops, position = [], start
        while True:
            position = dst.extend(src, position, rejected)
            stops.append((position, lines_of(dst.seal())))
            if position == len(sizes):
                break
        results.append(stops)
    assert results[0] == results[1]
    kept = [i for i in range(start, len(sizes)) if i not in rejected]
    assert [line for _, lines in results[0] for line in lines] == [bytes([65 + i % 26]) * sizes[i] for i in kept]
