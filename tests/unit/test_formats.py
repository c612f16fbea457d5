"""Body formats: a Content-Type picks the decoder; bodies become lines for a table."""
from __future__ import annotations

import gzip
import zlib

import pytest

from ingest.sources import formats
from ingest.sources.formats.compression import CorruptBody, UnsupportedEncoding, decompressor


def lines_of(decoded) -> list[bytes]:
    return [decoded.lines.line(i) for i in range(decoded.lines.events)]


@pytest.mark.parametrize("content_type", [None, "application/x-ndjson", "application/jsonl",
                                          "Application/NDJSON; charset=utf-8"])
def test_ndjson_bodies_are_one_event_per_line(content_type):
    decoded = formats.decode(content_type, b'{"a":1}\n{"a":2}\nnot json\n')
    assert lines_of(decoded) == [b'{"a":1}', b'{"a":2}', b"not json"]
    assert decoded.accepted == 2 and decoded.rejected == [2]
    assert decoded.errors[0][0] == 2 and decoded.batch is None


def test_a_json_array_is_one_event_per_element_and_a_json_object_one_line():
    decoded = formats.decode("application/json", b'\xef\xbb\xbf [{"a":1}, {"a":2}]')
    assert lines_of(decoded) == [b'{"a":1}', b'{"a":2}'] and decoded.errors == []
    assert lines_of(formats.decode("application/json", b'{"a":1}')) == [b'{"a":1}']


def test_the_refusals_keep_their_texts():
    with pytest.raises(formats.UnsupportedContentType) as refused:
        formats.decode("text/plain", b"{}")
    assert str(refused.value) == ("unsupported Content-Type 'text/plain'; "
                                  "send application/x-ndjson, application/json or application/vnd.apache.arrow.stream")
    with pytest.raises(formats.UnsupportedContentType):
        formats.decode("", b"{}")  # an empty Content-Type is not the default one
    with pytest.raises(formats.InvalidBody, match="^invalid JSON array: "):
        formats.decode("application/json", b'[{"a":1}')
    with pytest.raises(formats.InvalidBody, match="^the body holds no events"):
        formats.decode(None, b"\n\n")


def test_gzip_members_back_to_back_are_one_body_within_the_room_given():
    inflate = decompressor(" GZIP ")
    body = gzip.compress(b"abc") + gzip.compress(b"def")
    assert inflate.feed(body[:5], 100) + inflate.feed(body[5:], 100) == b"abcdef"
    inflate.finish()
    with pytest.raises(OverflowError):
        decompressor("gzip").feed(gzip.compress(b"x" * 100), 10)
    truncated = decompressor("gzip")
    truncated.feed(body[:10], 100)
    with pytest.raises(CorruptBody, match="^invalid gzip body: truncated stream$"):
        truncated.finish()
    with pytest.raises(CorruptBody, match="^invalid gzip body: trailing bytes after the gzip stream$"):
        decompressor("gzip").feed(gzip.compress(b"x") + b"junk", 100)
    assert decompressor(None) is None and decompressor("identity") is None
    with pytest.raises(UnsupportedEncoding):
        decompressor("br")


def test_deflate_bodies_are_the_zlib_format_within_the_room_given():
    body = zlib.compress(b"abc" * 10)
    inflate = decompressor("Deflate")
    assert inflate.feed(body[:4], 100) + inflate.feed(body[4:], 100) == b"abc" * 10
    inflate.finish()
    with pytest.raises(OverflowError):
        decompressor("deflate").feed(zlib.compress(b"x" * 100), 10)
    truncated = decompressor("deflate")
    truncated.feed(body[:5], 100)
    with pytest.raises(CorruptBody, match="^invalid deflate body: truncated stream$"):
        truncated.finish()
    with pytest.raises(CorruptBody, match="^invalid deflate body: trailing bytes"):
        decompressor("deflate").feed(body + b"junk", 100)
    with pytest.raises(CorruptBody, match="^invalid deflate body"):
        decompressor("deflate").feed(b"not zlib", 100)
