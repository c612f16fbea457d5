"""Body formats: a request's Content-Type picks the decoder that turns its
body into events. A new format is one module and one line in DECODERS."""
from __future__ import annotations

from ingest.sources.formats import arrow, ndjson
from ingest.sources.formats.base import Decoded, Decoder, InvalidBody, UnsupportedContentType

__all__ = ["DECODERS", "DEFAULT_CONTENT_TYPE", "Decoded", "Decoder", "InvalidBody", "UnsupportedContentType",
           "decode"]

FORM_TYPE = "application/x-www-form-urlencoded"

DECODERS: dict[str, Decoder] = {
    **dict.fromkeys(ndjson.NDJSON_TYPES, ndjson.decode_ndjson),
    ndjson.JSON_TYPE: ndjson.decode_json,
    **dict.fromkeys(arrow.ARROW_STREAM_TYPES, arrow.decode_arrow_stream),
    FORM_TYPE: ndjson.decode_ndjson,  # curl's default for -d/--data-binary: the body is read as it is, as NDJSON
}
DEFAULT_CONTENT_TYPE = "application/x-ndjson"  # a body sent without a Content-Type


def decode(content_type: str | None, body: bytes) -> Decoded:
    """Decodes a body by its Content-Type header (parameters such as charset ignored)."""
    media_type = (DEFAULT_CONTENT_TYPE if content_type is None else content_type).split(";")[0].strip().lower()
    decoder = DECODERS.get(media_type)
    if decoder is None:
        raise UnsupportedContentType(f"unsupported Content-Type {media_type!r}; send application/x-ndjson, "
                                     f"application/json or {arrow.ARROW_STREAM_TYPE}")
    return decoder(body)
