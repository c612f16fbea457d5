"""JSON -> Arrow encoding, on the compiled hot path and on the pure-Python reference.

Every behavioural test runs on both implementations (the `implementation`
fixture of conftest.py); the differential tests feed both the same generated
and corrupted lines and require identical batches and identical errors.
"""
from __future__ import annotations

import datetime
import json
import threading
import time
from array import array

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ingest.hotpath._encoder as compiled
import ingest.hotpath.reference.encoder as reference
from ingest.hotpath.protocols import EncodeResult
from ingest.testing.corpus import encoder_input as inputs
from ingest.schema import declared_schema

MODULES = {"cython": compiled, "python": reference}
UTC = datetime.timezone.utc
TIMESTAMP = pa.timestamp("us", tz="UTC")
JSON_META = {b"ingest.type": b"json"}




def encode(encoder, lines: list[bytes]) -> EncodeResult:
    return encoder.encode(*inputs(lines))


def columns(batch: pa.RecordBatch) -> dict[str, list]:
    return batch.to_pydict()


@pytest.fixture
def module(implementation):
    return MODULES[implementation]


@pytest.fixture
def encoder(module):
    return module.Encoder("events")


# ---------------------------------------------------------------------------
# Types


def test_every_type(encoder):
    result = encode(encoder, [
        b'{"ok":true,"n":-7,"x":1.5,"s":"hi","ts":"2024-05-01T12:34:56.789Z",'
        b'"obj":{"a":[1,2]},"arr":[1, "two"],"none":null}',
    ])
    assert result.errors == []
    assert isinstance(result, EncodeResult)
    batch = result.batch
    assert batch.schema.equals(pa.schema([
        pa.field("ok", pa.bool_()),
        pa.field("n", pa.int64()),
        pa.field("x", pa.float64()),
        pa.field("s", pa.string()),
        pa.field("ts", TIMESTAMP),
        pa.field("obj", pa.string(), metadata=JSON_META),
        pa.field("arr", pa.string(), metadata=JSON_META),
    ]), check_metadata=True)
    assert columns(batch) == {
        "ok": [True], "n": [-7], "x": [1.5], "s": ["hi"],
        "ts": [datetime.datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=UTC)],
        "obj": ['{"a":[1,2]}'], "arr": ['[1, "two"]'],
    }
    assert encoder.schema.equals(batch.schema, check_metadata=True)


def test_nested_values_keep_their_original_bytes(encoder):
    nested = b'{ "b" : [1, 2.50, {"c":"\\u00e9\\n"}] ,"d":{}}'
    result = encode(encoder, [b'{"a": ' + nested + b' , "e":[ ]}'])
    assert columns(result.batch) == {"a": [nested.decode()], "e": ["[ ]"]}
    assert result.batch.schema.field("a").metadata == JSON_META


def test_many_rows_and_nulls_in_every_type(encoder):
    lines = []
    for i in range(100):
        if i % 3 == 0:
            lines.append(b"{}")
        else:
            lines.append(json.dumps({
                "b": i % 2 == 0, "i": i, "f": i / 4, "s": "x" * (i % 5),
                "t": f"2024-01-01T00:00:{i % 60:02d}Z", "j": [i],
            }).encode())
    batch = encode(encoder, lines).batch
    assert batch.num_rows == 100
    data = columns(batch)
    for i in range(100):
        if i % 3 == 0:
            assert all(data[name][i] is None for name in data)
        else:
            assert data["i"][i] == i and data["f"][i] == i / 4 and data["s"][i] == "x" * (i % 5)
            assert data["b"][i] is (i % 2 == 0) and data["j"][i] == f"[{i}]"
            assert data["t"][i] == datetime.datetime(2024, 1, 1, 0, 0, i % 60, tzinfo=UTC)
    batch.validate(full=True)


def test_int_widens_to_float_within_a_batch(encoder):
    result = encode(encoder, [b'{"v":1}', b'{"v":null}', b'{"v":2.5}', b'{"v":3}'])
    assert result.batch.schema.field("v").type == pa.float64()
    assert columns(result.batch) == {"v": [1.0, None, 2.5, 3.0]}
    assert encoder.schema.field("v").type == pa.float64()


def test_int_widens_to_float_across_batches(encoder):
    first = encode(encoder, [b'{"v":1}', b'{"v":2}'])
    assert first.batch.schema.field("v").type == pa.int64()
    second = encode(encoder, [b'{"v":3}', b'{"v":0.5}'])
    assert columns(second.batch) == {"v": [3.0, 0.5]}
    third = encode(encoder, [b'{"v":4}'])
    assert third.batch.schema.field("v").type == pa.float64()
    assert columns(third.batch) == {"v": [4.0]}


def test_float_column_takes_ints(encoder):
    result = encode(encoder, [b'{"v":0.5}', b'{"v":-2}', b'{"v":9007199254740993}'])
    assert columns(result.batch) == {"v": [0.5, -2.0, 9007199254740992.0]}


def test_integers_outside_int64_become_float(encoder):
    # Documented (README, Types): an integer outside int64 is a DOUBLE, rounded to 53 bits.
    result = encode(encoder, [
        b'{"max":9223372036854775807,"min":-9223372036854775808,'
        b'"over":9223372036854775808,"under":-9223372036854775809,"zero":-0,'
        b'"big":18446744073709551617}',
    ])
    types = {field.name: field.type for field in result.batch.schema}
    assert types == {"max": pa.int64(), "min": pa.int64(), "over": pa.float64(),
                     "under": pa.float64(), "zero": pa.int64(), "big": pa.float64()}
    assert columns(result.batch) == {
        "max": [2**63 - 1], "min": [-(2**63)], "over": [2.0**63], "under": [-(2.0**63)],
        "zero": [0], "big": [2.0**64],
    }


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1" * 100_000, b"-" + b"9" * 400, b"1.5e309"])
def test_numbers_beyond_double_are_rejected_not_stored_as_inf(encoder, number):
    result = encode(encoder, [b'{"v":1.5}', b'{"v":%s,"w":1}' % number, b'{"new":%s}' % number,
                              b'{"s":"x"}', b'{"s":%s}' % number, b'{"v":1e308}'])
    assert result.errors == [(1, "field 'v': number out of range for DOUBLE"),
                             (2, "field 'new': number out of range for DOUBLE"),
                             (4, "field 's': number out of range for DOUBLE")]
    assert columns(result.batch) == {"v": [1.5, None, 1e308], "s": [None, "x", None]}


def test_declared_float64_rejects_numbers_beyond_double(module):
    encoder = declared(module, {"v": "float64", "l": "list<float64>"})
    result = encode(encoder, [b'{"v":1e400}', b'{"l":[1, -1e999]}', b'{"v":2, "l":[1e308]}'])
    assert result.errors == [(0, "field 'v': number out of range for DOUBLE"),
                             (1, "field 'l[1]': number out of range for DOUBLE")]
    assert columns(result.batch) == {"v": [2.0], "l": [[1e308]]}


def test_number_forms(encoder):
    texts = ["0", "-0.0", "1E2", "1e-2", "12.5e+1", "0.1", "123456789.123456789",
             "1.7976931348623157e308", "5e-324", "2.2250738585072014e-308",
             "0.30000000000000004", "-1234567890123456789012345678901234567890.5",
             "1" + "0" * 70, "0." + "0" * 30 + "1"]
    lines = [b'{"v":%s}' % text.encode() for text in texts]
    result = encode(encoder, lines)
    assert result.errors == []
    assert columns(result.batch)["v"] == [float(text) for text in texts]


# ---------------------------------------------------------------------------
# Conflicts, missing and new fields


def test_conflict_rejects_the_whole_line(encoder):
    result = encode(encoder, [
        b'{"a":1,"b":"x"}',
        b'{"b":"y","new":true,"a":"oops"}',
        b'{"a":2,"b":"z"}',
    ])
    assert result.errors == [(1, "field 'a': expected int64, got string")]
    assert columns(result.batch) == {"a": [1, 2], "b": ["x", "z"]}
    # the rejected line typed nothing either
    assert encoder.schema.names == ["a", "b"]
    later = encode(encoder, [b'{"new":"text"}'])
    assert later.batch.schema.field("new").type == pa.string()


def test_rejected_line_does_not_widen(encoder):
    encode(encoder, [b'{"a":1,"b":true}'])
    result = encode(encoder, [b'{"a":1.5,"b":2}', b'{"a":3}'])
    assert result.errors == [(0, "field 'b': expected bool, got int64")]
    assert result.batch.schema.field("a").type == pa.int64()
    assert columns(result.batch) == {"a": [3], "b": [None]}


@pytest.mark.parametrize("first, second, reason", [
    (b'1', b'"x"', "field 'v': expected int64, got string"),
    (b'1', b'true', "field 'v': expected int64, got bool"),
    (b'1.5', b'false', "field 'v': expected float64, got bool"),
    (b'1.5', b'"2024-01-01T00:00:00Z"', "field 'v': expected float64, got timestamp"),
    (b'true', b'1', "field 'v': expected bool, got int64"),
    (b'"s"', b'1', "field 'v': expected string, got int64"),
    (b'"s"', b'{"a":1}', "field 'v': expected string, got json"),
    (b'"2024-01-01T00:00:00Z"', b'"soon"', 'field \'v\': "soon" is not an ISO-8601 timestamp'
     " (YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM])"),
    (b'"2024-01-01T00:00:00Z"', b'1', "field 'v': expected timestamp, got int64"),
    (b'[1]', b'"[1]"', "field 'v': expected json, got string"),
    (b'{"a":1}', b'1e3', "field 'v': expected json, got float64"),
])
def test_conflict_reasons(encoder, first, second, reason):
    result = encode(encoder, [b'{"v":%s}' % first, b'{"v":%s}' % second, b'{"v":null}'])
    assert result.errors == [(1, reason)]
    assert result.batch.num_rows == 2


def test_timestamp_text_in_a_string_column_stays_text(encoder):
    result = encode(encoder, [b'{"v":"later"}', b'{"v":"2024-01-01T00:00:00Z"}'])
    assert result.errors == []
    assert columns(result.batch) == {"v": ["later", "2024-01-01T00:00:00Z"]}


def test_conflict_reason_names_unusual_fields(encoder):
    result = encode(encoder, [b'{"pri\\u00e7e \\"x\\"":1}', '{"priçe \\"x\\"":"no"}'.encode()])
    assert result.errors == [(1, "field 'priçe \"x\"': expected int64, got string")]


def test_missing_and_new_fields(encoder):
    first = encode(encoder, [b'{"a":1}', b'{"b":"x"}'])
    assert columns(first.batch) == {"a": [1, None], "b": [None, "x"]}
    second = encode(encoder, [b'{"c":true}', b'{"b":"y","c":false}'])
    assert second.batch.schema.names == ["a", "b", "c"]
    assert columns(second.batch) == {"a": [None, None], "b": [None, "y"], "c": [True, False]}
    assert second.batch.schema.field("a").type == pa.int64()


def test_columns_are_ordered_by_first_type(encoder):
    result = encode(encoder, [b'{"late":null,"early":1}', b'{"late":"x"}'])
    assert result.batch.schema.names == ["early", "late"]


def test_null_only_columns_are_not_emitted(encoder):
    result = encode(encoder, [b'{"a":null}', b'{"a":null,"b":null}'])
    assert result.errors == []
    assert result.batch.num_rows == 2 and result.batch.num_columns == 0
    assert len(encoder.schema) == 0
    result = encode(encoder, [b'{"a":null}', b'{"a":7}'])
    assert columns(result.batch) == {"a": [None, 7]}


def test_batch_is_none_only_without_rows_and_columns(encoder):
    result = encode(encoder, [b"nope"])
    assert result.batch is None and len(result.errors) == 1
    assert encode(encoder, []) == EncodeResult(None, [])
    encode(encoder, [b'{"a":1}'])
    empty = encode(encoder, [b"nope"]).batch
    assert empty.num_rows == 0 and empty.schema.names == ["a"]


def test_duplicate_keys_last_value_wins_in_first_place(encoder):
    result = encode(encoder, [b'{"a":1,"b":2,"a":"x"}', b'{"b":3,"a":"y","a":null}'])
    assert result.errors == []
    assert result.batch.schema.names == ["a", "b"]
    assert columns(result.batch) == {"a": ["x", None], "b": [2, 3]}


def test_duplicate_key_conflict_is_judged_on_the_last_value(encoder):
    encode(encoder, [b'{"a":1}'])
    result = encode(encoder, [b'{"a":"x","a":2}', b'{"a":3,"a":"x"}'])
    assert result.errors == [(1, "field 'a': expected int64, got string")]
    assert columns(result.batch) == {"a": [2]}


def test_keys_in_changing_order_and_many_columns(encoder):
    lines = [json.dumps({f"k{(i * 7 + j) % 40}": j for j in range(i % 13)}).encode()
             for i in range(300)]
    result = encode(encoder, lines)
    expected = [json.loads(line) for line in lines]
    assert result.errors == []
    assert result.batch.to_pylist() == [
        {name: row.get(name) for name in result.batch.schema.names} for row in expected]


# ---------------------------------------------------------------------------
# Timestamps


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01T12:34:56Z", datetime.datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)),
    ("2024-05-01 12:34:56", datetime.datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)),
    ("2024-05-01T12:34:56.5Z", datetime.datetime(2024, 5, 1, 12, 34, 56, 500000, tzinfo=UTC)),
    ("2024-05-01T12:34:56.123456789Z", datetime.datetime(2024, 5, 1, 12, 34, 56, 123456, tzinfo=UTC)),
    ("2024-05-01T12:34:56+02:00", datetime.datetime(2024, 5, 1, 10, 34, 56, tzinfo=UTC)),
    ("2024-05-01T00:10:00-0130", datetime.datetime(2024, 5, 1, 1, 40, tzinfo=UTC)),
    ("2024-01-01T00:30:00.25+01:00", datetime.datetime(2023, 12, 31, 23, 30, 0, 250000, tzinfo=UTC)),
    ("2024-02-29T23:59:59Z", datetime.datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)),
    ("2000-02-29T00:00:00Z", datetime.datetime(2000, 2, 29, tzinfo=UTC)),
    ("1969-12-31T23:59:59.999999Z", datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("0001-01-01T00:00:00Z", datetime.datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59Z", datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
])
def test_timestamps(encoder, text, expected):
    batch = encode(encoder, [b'{"t":"%s"}' % text.encode()]).batch
    assert batch.schema.field("t").type == TIMESTAMP
    assert columns(batch) == {"t": [expected]}


@pytest.mark.parametrize("text", [
    "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-04-31T00:00:00Z", "2024-13-01T00:00:00Z",
    "2024-00-10T00:00:00Z", "2024-01-00T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z",
    "2024-01-01T00:00:60Z", "0000-01-01T00:00:00Z", "2024-01-01", "2024-01-01T00:00Z",
    "2024-01-01t00:00:00Z", "2024-01-01T00:00:00z", "2024-01-01T00:00:00.Z",
    "2024-01-01T00:00:00.1234567890Z", "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00+01:60",
    "2024-01-01T00:00:00+01", "2024-01-01T00:00:00+1:00", "2024-01-01T00:00:00 ", " 2024-01-01T00:00:00",
    "2024-1-01T00:00:00Z", "２０２４-01-01T00:00:00Z", "2024-01-01T00:00:00ZZ",
])
def test_strings_that_are_not_timestamps(encoder, text):
    batch = encode(encoder, [json.dumps({"t": text}, ensure_ascii=False).encode()]).batch
    assert batch.schema.field("t").type == pa.string()
    assert columns(batch) == {"t": [text]}


ISO_FORMAT = " (YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM])"


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59.999999+01:00",
                                  "9999-12-31T23:59:59-00:01", "9999-12-31T23:00:00-23:59"])
def test_timestamps_whose_utc_instant_is_outside_years_1_to_9999(encoder, text):
    # Not a timestamp: a new column of them is text; a timestamp column rejects them with the reason.
    result = encode(encoder, [b'{"s":"%s"}' % text.encode(), b'{"t":"2024-01-01T00:00:00Z"}',
                              b'{"t":"%s"}' % text.encode(), b'{"t":"0001-01-01T01:00:00+01:00"}'])
    assert result.errors == [(2, "field 't': timestamp out of range (years 0001-9999)")]
    assert result.batch.schema.field("s").type == pa.string()
    assert columns(result.batch) == {
        "s": [text, None, None],
        "t": [None, datetime.datetime(2024, 1, 1, tzinfo=UTC), datetime.datetime(1, 1, 1, tzinfo=UTC)]}


@pytest.mark.parametrize("value, shown", [
    ("2024-13-01T00:00:00Z", '"2024-13-01T00:00:00Z"'),
    ("", '""'),
    ('tab\t "quote" é', '"tab\\t \\"quote\\" é"'),
    ("x" * 100, '"' + "x" * 64 + '..."'),
    ("é" * 40, '"' + "é" * 32 + '..."'),  # cut at 64 bytes, on a character boundary
])
def test_bad_timestamp_reason_quotes_the_value_and_the_format(encoder, value, shown):
    lines = [b'{"ts":"2024-01-01T00:00:00Z"}', json.dumps({"ts": value}, ensure_ascii=False).encode()]
    result = encode(encoder, lines)
    assert result.errors == [(1, f"field 'ts': {shown} is not an ISO-8601 timestamp" + ISO_FORMAT)]
    assert result.batch.num_rows == 1


def test_event_key_limit(module):
    limit = reference.MAX_EVENT_KEYS  # encoder_consts.pxi has the same number
    assert limit == 10_000
    fits = ("{" + ",".join(f'"k{i}":{i}' for i in range(limit)) + "}").encode()
    too_wide = ("{" + ",".join(f'"k{i % 10}":{i}' for i in range(limit + 1)) + "}").encode()
    result = encode(module.Encoder("wide"), [fits, too_wide, b'{"k1":1}'])
    assert result.errors == [(1, f"more than {limit} fields in one event")]
    assert result.batch.num_rows == 2 and result.batch.num_columns == limit
    assert module.validate_lines(*inputs([too_wide, fits])) == [(0, "more than 10000 fields in one event")]


def test_timestamp_written_with_escapes(encoder):
    batch = encode(encoder, [b'{"t":"2024-05-01T12:34:56\\u005a"}']).batch
    assert columns(batch) == {"t": [datetime.datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)]}


# ---------------------------------------------------------------------------
# Strings, escapes, UTF-8, BOM, whitespace


def test_escapes_are_decoded(encoder):
    line = rb'{"s":"q\" b\\ s\/ \b\f\n\r\t \u00e9\u20ac \ud83d\ude00 \u0000","k\u00e9y\n":1}'
    result = encode(encoder, [line])
    assert result.errors == []
    assert columns(result.batch) == {"s": ['q" b\\ s/ \b\f\n\r\t é€ 😀 \x00'], "kéy\n": [1]}
    assert result.batch.to_pylist() == [json.loads(line)]


def test_raw_utf8_everywhere(encoder):
    line = '{"名前":"日本語 ☃ 😀","ключ":{"é":"ü"}}'.encode()
    result = encode(encoder, [line])
    assert columns(result.batch) == {"名前": ["日本語 ☃ 😀"], "ключ": ['{"é":"ü"}']}


def test_same_key_raw_and_escaped_is_one_column(encoder):
    result = encode(encoder, ['{"é":1}'.encode(), b'{"\\u00e9":2}', b'{"\\u00E9":3}'])
    assert columns(result.batch) == {"é": [1, 2, 3]}


def test_bom_and_surrounding_whitespace(encoder):
    result = encode(encoder, [b'\xef\xbb\xbf{"a":1}', b' \t{"a":2} \t\r', b'\r\n{"a":3}\r\n',
                              b' \xef\xbb\xbf{"a":4}', b'{"a":5}\xef\xbb\xbf'])
    assert result.errors == [(3, "invalid JSON at byte 1: expected value"),
                             (4, "invalid JSON at byte 7: expected end of line")]
    assert columns(result.batch) == {"a": [1, 2, 3]}


# ---------------------------------------------------------------------------
# Rejected lines: the exact reasons

SYNTAX_CASES = [
    (b"", "empty line"),
    (b" \t\r", "empty line"),
    (b"\xef\xbb\xbf ", "empty line"),
    (b"{", "invalid JSON at byte 1: unexpected end of line"),
    (b'{"a"', "invalid JSON at byte 4: unexpected end of line"),
    (b'{"a":', "invalid JSON at byte 5: unexpected end of line"),
    (b'{"a":1', "invalid JSON at byte 6: unexpected end of line"),
    (b'{"a":"abc', "invalid JSON at byte 9: unexpected end of line"),
    (b'{"a":{"b":1', "invalid JSON at byte 11: unexpected end of line"),
    (b'{"a":tr', "invalid JSON at byte 7: unexpected end of line"),
    (b"[1,2", "invalid JSON at byte 4: unexpected end of line"),
    (b'{"a" 1}', "invalid JSON at byte 5: expected ':'"),
    (b'{"a":{"b" 1}}', "invalid JSON at byte 10: expected ':'"),
    (b'{"a":1,}', "invalid JSON at byte 7: expected string key"),
    (b'{"a":{"b":1,}}', "invalid JSON at byte 12: expected string key"),
    (b'{,}', "invalid JSON at byte 1: expected string key"),
    (b"{'a':1}", "invalid JSON at byte 1: expected string key"),
    (b'{a:1}', "invalid JSON at byte 1: expected string key"),
    (b'{"a":{1:2}}', "invalid JSON at byte 6: expected string key"),
    (b'{"a":1 "b":2}', "invalid JSON at byte 7: expected ',' or '}'"),
    (b'{"a":0x10}', "invalid JSON at byte 6: expected ',' or '}'"),
    (b'{"a":1.5.3}', "invalid JSON at byte 8: expected ',' or '}'"),
    (b'{"a":{"b":1 ]}', "invalid JSON at byte 12: expected ',' or '}'"),
    (b'{"a":[1 2]}', "invalid JSON at byte 8: expected ',' or ']'"),
    (b'{"a":[1}', "invalid JSON at byte 7: expected ',' or ']'"),
    (b'{"a":[1,]}', "invalid JSON at byte 8: expected value"),
    (b'{"a":[,1]}', "invalid JSON at byte 6: expected value"),
    (b"{\"a\":'x'}", "invalid JSON at byte 5: expected value"),
    (b'{"a":NaN}', "invalid JSON at byte 5: expected value"),
    (b'{"a":Infinity}', "invalid JSON at byte 5: expected value"),
    (b'{"a":.5}', "invalid JSON at byte 5: expected value"),
    (b'{"a":+1}', "invalid JSON at byte 5: expected value"),
    (b'{"a":}', "invalid JSON at byte 5: expected value"),
    (b'{"a":1}x', "invalid JSON at byte 7: expected end of line"),
    (b'{"a":1}{"b":2}', "invalid JSON at byte 7: expected end of line"),
    (b'{"a":1} ,', "invalid JSON at byte 8: expected end of line"),
    ('{"a":1}\u00a0'.encode(), "invalid JSON at byte 7: expected end of line"),
    (b'{"a":nan}', "invalid JSON at byte 5: invalid literal"),
    (b'{"a":tru}', "invalid JSON at byte 5: invalid literal"),
    (b'{"a":True}', "invalid JSON at byte 5: expected value"),
    (b'{"a":nul}', "invalid JSON at byte 5: invalid literal"),
    (b'{"a":[fals]}', "invalid JSON at byte 6: invalid literal"),
    (b'{"a":-Infinity}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":01}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":-01}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":00}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":1.}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":1.e5}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":1e}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":1e+}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":-}', "invalid JSON at byte 5: invalid number"),
    (b'{"a":-', "invalid JSON at byte 5: invalid number"),
    (b'{"a":[1, -.5]}', "invalid JSON at byte 9: invalid number"),
    (b'{"a":"x\ty"}', "invalid JSON at byte 7: control character in string"),
    (b'{"a\nb":1}', "invalid JSON at byte 3: control character in string"),
    (b'{"a":"\x00"}', "invalid JSON at byte 6: control character in string"),
    (b'{"a":"\\x"}', "invalid JSON at byte 6: invalid escape"),
    (b'{"a":"\\U0041"}', "invalid JSON at byte 6: invalid escape"),
    (b'{"a":"\\u12G4"}', "invalid JSON at byte 6: invalid escape"),
    (b'{"a":"\\u00', "invalid JSON at byte 6: invalid escape"),
    (b'{"a":"\\', "invalid JSON at byte 6: invalid escape"),
    (b'{"a":"ok\\\'"}', "invalid JSON at byte 8: invalid escape"),
    (b'{"a":"\\ud800"}', "invalid JSON at byte 6: lone surrogate"),
    (b'{"a":"\\udc00\\ud800"}', "invalid JSON at byte 6: lone surrogate"),
    (b'{"a":"x\\ud83d\\u0041"}', "invalid JSON at byte 7: lone surrogate"),
    (b'{"a":"\\ud83d\\ud83d\\ude00"}', "invalid JSON at byte 6: lone surrogate"),
    (b'{"a":"\\ud83d\\u12"}', "invalid JSON at byte 6: lone surrogate"),
    (b'{"\\udfff":1}', "invalid JSON at byte 2: lone surrogate"),
    (b'{"a":["\\ud800"]}', "invalid JSON at byte 7: lone surrogate"),
    (b"[1,2]", "top-level value is not an object"),
    (b'  "x"  ', "top-level value is not an object"),
    (b"null", "top-level value is not an object"),
    (b"12 13", "top-level value is not an object"),
    (b'{"":1}', "field name is empty"),
    (b'{"a":1,"":', "field name is empty"),
    (b"\xff", "invalid UTF-8 at byte 0"),
    (b'{"a":"\xc3("}', "invalid UTF-8 at byte 6"),
    (b'{"a":"\xed\xa0\x80"}', "invalid UTF-8 at byte 6"),
    (b'{"a":"\xc0\xaf"}', "invalid UTF-8 at byte 6"),
    (b'{"a":"\xe0\x80\xaf"}', "invalid UTF-8 at byte 6"),
    (b'{"a":"\xf4\x90\x80\x80"}', "invalid UTF-8 at byte 6"),
    (b'{"a":"\xf8\x88\x80\x80\x80"}', "invalid UTF-8 at byte 6"),
    (b'{"a":"ok\x80"}', "invalid UTF-8 at byte 8"),
    (b'{"a":1} \xe2\x82', "invalid UTF-8 at byte 8"),
    (b'{"a" 1, "b":"\xff"}', "invalid UTF-8 at byte 13"),
]


@pytest.mark.parametrize("line, reason", SYNTAX_CASES)
def test_rejected_line_reasons(module, line, reason):
    encoder = module.Encoder("events")
    result = encode(encoder, [b'{"ok":1}', line, b'{"ok":2}'])
    assert result.errors == [(1, reason)]
    assert columns(result.batch) == {"ok": [1, 2]}
    assert module.validate_lines(*inputs([line])) == [(0, reason)]


def test_all_syntax_reasons_in_one_call_match_between_implementations():
    lines = [line for line, _ in SYNTAX_CASES]
    expected = [(i, reason) for i, (_, reason) in enumerate(SYNTAX_CASES)]
    for module in MODULES.values():
        assert module.Encoder().encode(*inputs(lines)) == EncodeResult(None, expected)
        assert module.validate_lines(*inputs(lines)) == expected


def test_valid_edge_cases(encoder):
    lines = [b"{}", b" { } ", b'{"a":{"":1}}', b'{"a":[]}', b'{"a":[[],{}]}', b'{"b":-0.0e-0}',
             b'{"c":"\\/"}', b'{"d" : 1 , "e" :\t2}']
    result = encode(encoder, lines)
    assert result.errors == []
    assert result.batch.num_rows == len(lines)


def test_depth_limit(module):
    encoder = module.Encoder("deep", max_depth=3)
    result = encode(encoder, [b'{"a":[[1]]}', b'{"a":[[[1]]]}', b'{"a":{"b":{}}}', b'{"a":[{"b":{"c":1}}]}',
                              b"[[[]]]", b"[[[[]]]]"])
    assert result.errors == [(1, "nesting deeper than 3"), (3, "nesting deeper than 3"),
                             (4, "top-level value is not an object"), (5, "nesting deeper than 3")]
    assert columns(result.batch) == {"a": ["[[1]]", '{"b":{}}']}
    assert module.validate_lines(*inputs([b'{"a":[[[1]]]}']), max_depth=3) == [(0, "nesting deeper than 3")]


def test_default_depth_limit_is_64(module):
    fits = b'{"a":' + b"[" * 63 + b"]" * 63 + b"}"
    too_deep = b'{"a":' + b"[" * 64 + b"]" * 64 + b"}"
    assert module.Encoder().encode(*inputs([fits, too_deep])).errors == [(1, "nesting deeper than 64")]
    very_deep = b'{"a":' + b'{"b":' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    assert module.validate_lines(*inputs([very_deep])) == [(0, "nesting deeper than 64")]


def test_deep_nesting_within_a_large_limit(module):
    line = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    result = module.Encoder(max_depth=10_000).encode(*inputs([line]))
    assert result.errors == [] and columns(result.batch) == {"a": [line[5:-1].decode()]}


def test_max_depth_must_be_positive(module):
    with pytest.raises(ValueError):
        module.Encoder(max_depth=0)
    with pytest.raises(ValueError):
        module.validate_lines(b"", array("q"), max_depth=0)


# ---------------------------------------------------------------------------
# Inputs


def test_accepts_any_bytes_like_input(module):
    lines = [b'{"a":1}', b'{"a":2}']
    data, spans = inputs(lines)
    expected = module.Encoder().encode(data, spans).batch
    variants = [
        (bytearray(data), spans),
        (memoryview(data), memoryview(spans)),
        (data, np.array(spans, dtype=np.int64)),
        (data, spans.tobytes()),
        (memoryview(b"xx" + data)[2:], array("q", [s for s in spans])),
    ]
    for variant_data, variant_spans in variants:
        assert module.Encoder().encode(variant_data, variant_spans).batch.equals(expected)
    # spans may leave gaps and need not start at 0
    assert columns(module.Encoder().encode(b'xx{"a":1}yy{"a":2}', array("q", [2, 9, 11, 18])).batch) == {
        "a": [1, 2]}


@pytest.mark.parametrize("spans", [[0], [0, 100], [-1, 2], [3, 2], [0, 7, 7, 8]])
def test_rejects_spans_outside_the_data(module, spans):
    with pytest.raises(ValueError):
        module.Encoder().encode(b'{"a":1}', array("q", spans))
    with pytest.raises(ValueError):
        module.validate_lines(b'{"a":1}', array("q", spans))


def test_validate_lines_ignores_the_schema(module):
    lines = [b'{"a":1}', b'{"a":"x"}', b"{", b'{"a":[1,]}']
    assert module.validate_lines(*inputs(lines)) == [
        (2, "invalid JSON at byte 1: unexpected end of line"),
        (3, "invalid JSON at byte 8: expected value"),
    ]
    assert module.validate_lines(b"", array("q")) == []


# ---------------------------------------------------------------------------
# Declared schemas

ORDERS = {
    "id": "int64", "price": "float64", "paid": "bool", "note": "string", "ts": "timestamp",
    "day": "date", "payload": "json", "tags": "list<string>", "address": "struct<city: string, zip: int64>",
}


def declared(module, columns=ORDERS, **kwargs):
    return module.Encoder("orders", schema=declared_schema(columns), **kwargs)


def test_declared_columns_come_first_and_are_always_there(module):
    encoder = declared(module)
    assert encoder.schema.equals(declared_schema(ORDERS), check_metadata=True)
    result = encode(encoder, [b'{"extra":1,"note":"x"}', b'{"more":"y"}'])
    assert result.errors == []
    assert result.batch.schema.names == [*ORDERS, "extra", "more"]
    assert result.batch.schema.equals(encoder.schema, check_metadata=True)
    data = columns(result.batch)
    assert data["note"] == ["x", None] and data["extra"] == [1, None] and data["more"] == [None, "y"]
    assert all(data[name] == [None, None] for name in ORDERS if name != "note")
    # a batch with no line of a declared column still has it
    assert encode(encoder, [b"{}"]).batch.schema.names == [*ORDERS, "extra", "more"]
    result.batch.validate(full=True)


def test_declared_values_convert(module):
    line = ('{"id":-7,"price":2,"paid":false,"note":"2024-01-01T00:00:00Z","ts":"2024-05-01T12:00:00+02:00",'
            '"day":"2024-02-29","payload":{"a": [1, "\\u00e9"]},"tags":["a",null,"é"],'
            '"address":{"zip":10115,"unknown":[1],"city":"Berlin"}}').encode()
    result = encode(declared(module), [line])
    assert result.errors == []
    assert result.batch.to_pylist() == [{
        "id": -7, "price": 2.0, "paid": False, "note": "2024-01-01T00:00:00Z",
        "ts": datetime.datetime(2024, 5, 1, 10, tzinfo=UTC), "day": datetime.date(2024, 2, 29),
        "payload": '{"a": [1, "\\u00e9"]}', "tags": ["a", None, "é"],
        "address": {"city": "Berlin", "zip": 10115},
    }]
    assert result.batch.column("price").type == pa.float64()


@pytest.mark.parametrize("value", [b'"x\\u00e9"', b"1.50", b"-0", b"true", b"[ ]", b'{"a" : null}'])
def test_declared_json_keeps_the_exact_text_of_any_value(module, value):
    result = encode(declared(module, {"j": "json"}), [b'{"j":%s}' % value, b'{"j":null}'])
    assert columns(result.batch) == {"j": [value.decode(), None]}
    assert result.batch.schema.field("j").metadata == JSON_META


@pytest.mark.parametrize("unit, text, expected", [
    ("us", '"2024-05-01T12:34:56.789123Z"', 1714566896789123),
    ("ms", '"2024-05-01T12:34:56.789123Z"', 1714566896789),
    ("s", '"2024-05-01T12:34:56.789123Z"', 1714566896),
    ("s", '"1969-12-31T23:59:59.5Z"', -1),  # floored: the digits past the unit are dropped
    ("ms", '"1969-12-31T23:59:59.9995Z"', -1),
    ("s", "1714566896", 1714566896),  # epoch integers are in the declared unit
    ("ms", "-1", -1),
    ("us", "0", 0),
    ("s", "253402300799", 253402300799),  # 9999-12-31T23:59:59
    ("s", "-62135596800", -62135596800),  # 0001-01-01
])
def test_declared_timestamps(module, unit, text, expected):
    result = encode(declared(module, {"t": f"timestamp[{unit}]"}), [b'{"t":%s}' % text.encode()])
    assert result.errors == []
    column = result.batch.column("t")
    assert column.type == pa.timestamp(unit, tz="UTC")
    assert column.cast(pa.int64()).to_pylist() == [expected]


@pytest.mark.parametrize("text, days", [("1970-01-01", 0), ("1969-12-31", -1), ("2000-02-29", 11016),
                                        ("0001-01-01", -719162), ("9999-12-31", 2932896)])
def test_declared_dates(module, text, days):
    result = encode(declared(module, {"d": "date"}), [b'{"d":"%s"}' % text.encode()])
    assert result.batch.column("d").cast(pa.int32()).to_pylist() == [days]


@pytest.mark.parametrize("column_type, value, reason", [
    ("int64", b"1.5", "field 'v': expected int64, got number"),
    ("int64", b"1e3", "field 'v': expected int64, got number"),
    ("int64", b'"1"', "field 'v': expected int64, got string"),
    ("int64", b"true", "field 'v': expected int64, got bool"),
    ("int64", b"9223372036854775808", "field 'v': integer out of int64 range"),
    ("int64", b"[1]", "field 'v': expected int64, got array"),
    ("float64", b'"1.5"', "field 'v': expected float64, got string"),
    ("float64", b"{}", "field 'v': expected float64, got object"),
    ("bool", b"1", "field 'v': expected bool, got integer"),
    ("bool", b'"true"', "field 'v': expected bool, got string"),
    ("string", b"1", "field 'v': expected string, got integer"),
    ("string", b'["a"]', "field 'v': expected string, got array"),
    ("timestamp", b'"soon"', 'field \'v\': "soon" is not an ISO-8601 timestamp' + ISO_FORMAT),
    ("timestamp", b'"2024-01-01"', 'field \'v\': "2024-01-01" is not an ISO-8601 timestamp' + ISO_FORMAT),
    ("timestamp", b'"0001-01-01T00:00:00+01:00"', "field 'v': timestamp out of range (years 0001-9999)"),
    ("list<timestamp>", b'["2024-01-01T00:00:00Z", "x\\ty"]',
     'field \'v[1]\': "x\\ty" is not an ISO-8601 timestamp' + ISO_FORMAT),
    ("float64", b"1e400", "field 'v': number out of range for DOUBLE"),
    ("timestamp", b"1.5", "field 'v': expected timestamp, got number"),
    ("timestamp", b"false", "field 'v': expected timestamp, got bool"),
    ("timestamp[s]", b"253402300800", "field 'v': timestamp out of range (years 0001-9999)"),
    ("timestamp[ms]", b"-62135596800001", "field 'v': timestamp out of range (years 0001-9999)"),
    ("timestamp", b"99999999999999999999", "field 'v': timestamp out of range (years 0001-9999)"),
    ("date", b'"2024-02-30"', "field 'v': string is not a YYYY-MM-DD date"),
    ("date", b'"2024-1-01"', "field 'v': string is not a YYYY-MM-DD date"),
    ("date", b'"0000-01-01"', "field 'v': string is not a YYYY-MM-DD date"),
    ("date", b'"2024-01-01T00:00:00Z"', "field 'v': string is not a YYYY-MM-DD date"),
    ("date", b"19000", "field 'v': expected date, got integer"),
    ("list<int64>", b"1", "field 'v': expected list, got integer"),
    ("list<int64>", b'{"a":1}', "field 'v': expected list, got object"),
    ("list<int64>", b'[1, 2, "3"]', "field 'v[2]': expected int64, got string"),
    ("list<list<int64>>", b"[[1], [2, [3]]]", "field 'v[1][1]': expected int64, got array"),
    ("struct<a: int64>", b"[]", "field 'v': expected struct, got array"),
    ("struct<a: int64>", b'"x"', "field 'v': expected struct, got string"),
    ("struct<a: int64>", b'{"a": -1.0}', "field 'v.a': expected int64, got number"),
    ("struct<a: struct<b: date>>", b'{"a": {"b": 7}}', "field 'v.a.b': expected date, got integer"),
    ("list<struct<a: list<bool>>>", b'[{"a": [true]}, {"a": [false, 0]}]',
     "field 'v[1].a[1]': expected bool, got integer"),
    ("struct<a: int64>", b'{"a": "x", "a": 1}', "field 'v.a': expected int64, got string"),
])
def test_declared_reasons(module, column_type, value, reason):
    result = encode(declared(module, {"v": column_type}), [b'{"v":%s}' % value, b'{"v":null}'])
    assert result.errors == [(0, reason)]
    assert result.batch.num_rows == 1
    result.batch.validate(full=True)


def test_declared_int64_never_widens(module):
    encoder = declared(module, {"n": "int64"})
    result = encode(encoder, [b'{"n":1}', b'{"n":1.5}', b'{"n":2}'])
    assert result.errors == [(1, "field 'n': expected int64, got number")]
    assert columns(result.batch) == {"n": [1, 2]}
    assert encoder.schema.field("n").type == pa.int64()


def test_first_problem_in_field_order_is_named(module):
    result = encode(declared(module), [b'{"note":1,"id":"x"}', b'{"id":"x","note":1}',
                                       b'{"tags":["a",2],"id":"x"}', b'{"undeclared":"x","id":"x","x":1}'])
    assert result.errors == [(0, "field 'note': expected string, got integer"),
                             (1, "field 'id': expected int64, got string"),
                             (2, "field 'tags[1]': expected string, got integer"),
                             (3, "field 'id': expected int64, got string")]


def test_undeclared_fields_still_conflict_as_inferred(module):
    encoder = declared(module, {"id": "int64"})
    result = encode(encoder, [b'{"id":1,"x":1}', b'{"id":2,"x":"s"}', b'{"id":3,"x":2.5}'])
    assert result.errors == [(1, "field 'x': expected int64, got string")]
    assert columns(result.batch) == {"id": [1, 3], "x": [1.0, 2.5]}


def test_strict_rejects_undeclared_fields_at_any_level(module):
    encoder = declared(module, strict=True)
    result = encode(encoder, [
        b'{"id":1,"address":{"city":"x"}}',
        b'{"id":2,"extra":null}',
        b'{"note":1,"extra":2}',
        b'{"extra":2,"note":1}',
        b'{"address":{"city":"x","planet":"earth"}}',
        b'{"address":{"city":"x","planet":"earth"},"extra":1}',
    ])
    assert result.errors == [(1, "field 'extra' is not declared"),
                             (2, "field 'note': expected string, got integer"),
                             (3, "field 'extra' is not declared"),
                             (4, "field 'address.planet' is not declared"),
                             (5, "field 'address.planet' is not declared")]
    assert result.batch.schema.names == list(ORDERS)
    assert columns(result.batch)["id"] == [1]


def test_strict_needs_a_schema(module):
    with pytest.raises(ValueError, match="strict"):
        module.Encoder("t", strict=True)


def test_strict_with_an_empty_schema_takes_only_empty_objects(module):
    encoder = module.Encoder("t", schema=pa.schema([]), strict=True)
    result = encode(encoder, [b"{}", b'{"a":1}'])
    assert result.errors == [(1, "field 'a' is not declared")]
    assert result.batch.num_rows == 1 and result.batch.num_columns == 0


def test_lists_and_structs_with_nulls_everywhere(module):
    encoder = declared(module, {"items": "list<struct<sku: string, qty: int64, tags: list<string>>>",
                                "geo": "struct<lat: float64, where: struct<city: string, zip: int64>>"})
    lines = [
        b'{"items":[{"sku":"a","qty":1,"tags":["x"]},null,{"qty":null,"tags":[]},{}],"geo":{"lat":1}}',
        b'{}',
        b'{"items":null,"geo":null}',
        b'{"items":[],"geo":{"where":{"zip":1}}}',
        b'{"items":[{"tags":[null,"y"]}],"geo":{"where":null,"lat":2.5}}',
    ]
    result = encode(encoder, lines)
    assert result.errors == []
    result.batch.validate(full=True)
    assert result.batch.to_pylist() == [
        {"items": [{"sku": "a", "qty": 1, "tags": ["x"]}, None, {"sku": None, "qty": None, "tags": []},
                   {"sku": None, "qty": None, "tags": None}],
         "geo": {"lat": 1.0, "where": None}},
        {"items": None, "geo": None},
        {"items": None, "geo": None},
        {"items": [], "geo": {"lat": None, "where": {"city": None, "zip": 1}}},
        {"items": [{"sku": None, "qty": None, "tags": [None, "y"]}], "geo": {"lat": 2.5, "where": None}},
    ]
    again = encode(encoder, lines[::-1])  # the next batch starts clean
    again.batch.validate(full=True)
    assert again.batch.to_pylist() == result.batch.to_pylist()[::-1]


def test_rejected_lines_leave_no_trace_in_nested_columns(module):
    encoder = declared(module, {"items": "list<struct<sku: string, n: list<int64>>>", "id": "int64",
                                "s": "struct<a: list<string>, b: int64>"})
    result = encode(encoder, [
        b'{"items":[{"sku":"a","n":[1]}],"id":1}',
        b'{"items":[{"sku":"b","n":[2,3]},{"sku":"c","n":[4]}],"id":"bad"}',  # converted, then rejected
        b'{"items":[{"sku":"d","n":[5,6,"x"]}]}',  # fails half-way into a list
        b'{"s":{"a":["p","q"],"b":"no"}}',  # fails after a struct field was filled
        b'{"s":{"a":["r"]},"items":[{"sku":"e"}],"id":2}',
    ])
    assert [index for index, _ in result.errors] == [1, 2, 3]
    result.batch.validate(full=True)
    assert result.batch.to_pylist() == [
        {"items": [{"sku": "a", "n": [1]}], "id": 1, "s": None},
        {"items": [{"sku": "e", "n": None}], "id": 2, "s": {"a": ["r"], "b": None}},
    ]
    items = result.batch.column("items")
    assert len(items.values) == 2 and len(items.values.field("n").values) == 1


def test_repeated_keys(module):
    encoder = declared(module, {"v": "list<int64>", "s": "struct<a: list<int64>, b: string>"})
    result = encode(encoder, [
        b'{"v":"not judged","v":[1]}',  # top level: the last value only
        b'{"s":{"a":[1,2],"b":"x","a":[3]}}',  # inside a struct: the last one wins...
        b'{"s":{"a":[1],"a":["x"]}}',  # ...but each must fit
        b'{"s":{"a":[4],"a":null}}',
    ])
    assert result.errors == [(2, "field 's.a[0]': expected int64, got string")]
    result.batch.validate(full=True)
    assert result.batch.to_pylist() == [
        {"v": [1], "s": None}, {"v": None, "s": {"a": [3], "b": "x"}}, {"v": None, "s": {"a": None, "b": None}}]
    assert len(result.batch.column("s").field("a").values) == 1  # the dropped [1, 2] and [4] are gone


def test_declared_nesting_to_the_depth_limit(module):
    depth = 63  # the line's object is depth 1: max_depth 64 leaves 63 lists
    encoder = declared(module, {"v": "list<" * depth + "int64" + ">" * depth})
    value = b"[" * depth + b"7" + b"]" * depth
    result = encode(encoder, [b'{"v":%s}' % value, b'{"v":%s}' % (b"[" * 64 + b"]" * 64)])
    assert result.errors == [(1, "nesting deeper than 64")]
    cell = result.batch.column("v").to_pylist()[0]
    for _ in range(depth):
        cell = cell[0]
    assert cell == 7
    with pytest.raises(ValueError, match="nests 64 lists/structs, more than 63"):
        declared(module, {"v": "list<" * 64 + "int64" + ">" * 64})


def test_deep_structs(module):
    depth = 40
    columns_ = {"v": "struct<a: " * depth + "json" + ">" * depth}
    value = b'{"a":' * depth + b'[1,{"x":2}]' + b"}" * depth
    result = encode(declared(module, columns_, max_depth=128), [b'{"v":%s}' % value])
    assert result.errors == []
    cell = result.batch.column("v").to_pylist()[0]
    for _ in range(depth):
        cell = cell["a"]
    assert cell == '[1,{"x":2}]'


def test_declared_batch_without_rows(module):
    encoder = declared(module)
    result = encode(encoder, [b"{", b'{"id":"x"}'])
    assert len(result.errors) == 2
    assert result.batch.num_rows == 0 and result.batch.schema.names == list(ORDERS)
    result.batch.validate(full=True)
    assert encode(encoder, []).batch.num_rows == 0


def test_declared_text_with_escapes_and_keys_with_escapes(module):
    encoder = declared(module, {"s": "struct<\"k\u00e9y\": string>", "l": "list<string>"})
    result = encode(encoder, [b'{"s":{"k\\u00e9y":"a\\nb"},"l":["\\ud83d\\ude00","\\""]}'])
    assert result.errors == []
    assert result.batch.to_pylist() == [{"s": {"kéy": "a\nb"}, "l": ["😀", '"']}]


def test_encoder_checks_the_schema_it_is_given(module):
    with pytest.raises(ValueError, match="cannot be declared"):
        module.Encoder("t", schema=pa.schema([pa.field("x", pa.int32())]))
    with pytest.raises(TypeError):
        module.Encoder("t", schema={"x": "int64"})


def on_two_threads(work) -> list:
    """What `work()` returns, run at the same time on two threads (separate encoders)."""
    results = [None, None]

    def run(slot):
        results[slot] = work()

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_declared_encoding_in_two_threads_gives_the_same_batches():
    lines = [json.dumps({"id": i, "tags": [str(i), None], "address": {"city": f"c{i}", "zip": i},
                         "ts": i * 1000}).encode() for i in range(20_000)]
    data, spans = inputs(lines)
    expected = declared(compiled).encode(data, spans).batch
    assert all(batch.equals(expected) for batch in on_two_threads(lambda: declared(compiled).encode(data, spans).batch))
    assert expected.num_rows == 20_000


# ---------------------------------------------------------------------------
# Differential: generated objects and corrupted lines

KEYS = st.sampled_from(["a", "b", "c", "id", "ts", "é", 'q"uote', "sp ace", "😀", "k\\"]) | st.text(min_size=1, max_size=4)
TIMESTAMPS = st.builds(
    lambda dt, sep, frac, tz: dt.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + tz,
    st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)),
    st.sampled_from(["T", " "]),
    st.sampled_from(["", ".5", ".123", ".123456", ".000001"]),
    st.sampled_from(["", "Z", "+05:30", "-0800", "+00:00"]),
)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8) | TIMESTAMPS)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=6)
STYLES = st.sampled_from([
    {"separators": (",", ":")}, {"separators": (", ", ": ")}, {"ensure_ascii": False},
    {"indent": None, "separators": (" , ", " : ")},
])


@st.composite
def json_lines(draw, max_lines=8):
    lines = []
    for obj in draw(st.lists(OBJECTS, min_size=1, max_size=max_lines)):
        text = json.dumps(obj, **draw(STYLES))
        lines.append(draw(st.sampled_from(["", " ", "\t"])).encode() + text.encode() + draw(
            st.sampled_from([b"", b" ", b"\r"])))
    return lines


def assert_same_results(lines_per_call: list[list[bytes]], **kwargs) -> list[tuple[list[bytes], EncodeResult]]:
    """Feeds both implementations the same calls (Encoder("t", **kwargs));
    returns the compiled results."""
    encoders = {name: module.Encoder("t", **kwargs) for name, module in MODULES.items()}
    results = []
    for lines in lines_per_call:
        data, spans = inputs(lines)
        got = {name: encoder.encode(data, spans) for name, encoder in encoders.items()}
        fast, slow = got["cython"], got["python"]
        assert fast.errors == slow.errors
        if fast.batch is None or slow.batch is None:
            assert fast.batch is None and slow.batch is None
        else:
            assert fast.batch.schema.equals(slow.batch.schema, check_metadata=True)
            assert fast.batch.equals(slow.batch)
            fast.batch.validate(full=True)
        assert encoders["cython"].schema.equals(encoders["python"].schema, check_metadata=True)
        syntax = [error for error in fast.errors if not error[1].startswith("field '")]
        assert compiled.validate_lines(data, spans) == reference.validate_lines(data, spans) == syntax
        results.append((lines, fast))
    return results


def expected_cell(value, arrow_type: pa.DataType):
    """What a column of `arrow_type` should hold for json.loads' `value`."""
    if value is None:
        return None
    if arrow_type == pa.float64():
        return float(value)
    if arrow_type == TIMESTAMP:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_lines(), min_size=1, max_size=3))
def test_generated_objects_agree_with_each_other_and_with_json_loads(calls):
    for lines, result in assert_same_results(calls):
        assert all(reason.startswith("field '") for _, reason in result.errors)
        rejected = {index for index, _ in result.errors}
        accepted = [json.loads(line) for i, line in enumerate(lines) if i not in rejected]
        if result.batch is None:
            assert accepted == []
            continue
        assert result.batch.num_rows == len(accepted)
        for field in result.batch.schema:
            column = result.batch.column(field.name).to_pylist()
            for got, obj in zip(column, accepted):
                value = obj.get(field.name)
                if field.metadata == JSON_META:
                    assert (got is None and value is None) or json.loads(got) == value
                else:
                    assert got == expected_cell(value, field.type)


def corrupt(line: bytes, data) -> bytes:
    line = bytearray(line)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        position = data.draw(st.integers(0, len(line)))
        if kind == "truncate":
            del line[position:]
        elif kind == "flip" and position < len(line):
            line[position] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            line[position:position] = data.draw(st.sampled_from(
                [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\\u", b"\\ud83d", b"0", b"-", b".",
                 b"e", b" ", b"\t", b"\x01", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"n"]))
        elif kind == "delete" and position < len(line):
            del line[position]
    return bytes(line)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_lines(max_lines=6), st.data())
def test_corrupted_lines_give_equal_errors(lines, data):
    broken = [corrupt(line, data) if data.draw(st.booleans()) else line for line in lines]
    assert_same_results([lines, broken])


# ---------------------------------------------------------------------------
# The GIL


def test_encode_runs_without_the_gil():
    lines = [b'{"id":%d,"user":"u_%d","price":%d.5,"ok":true,"tags":{"a":[1,2,3]},"note":"%s"}'
             % (i, i, i, b"x" * 100) for i in range(300_000)]
    data, spans = inputs(lines)
    encoder = compiled.Encoder("gil")
    done = threading.Event()
    started = threading.Event()

    def work():
        started.set()
        encoder.encode(data, spans)
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    started.wait()
    spins = 0
    begin = time.perf_counter()
    while not done.is_set():
        spins += 1
    elapsed = time.perf_counter() - begin
    thread.join()
    # Holding the GIL for the whole parse would leave this thread a handful
    # of switch intervals (5 ms each) to spin in.
    assert elapsed > 0.02 and spins > 10_000, (elapsed, spins)


def test_two_encoders_in_two_threads_give_the_same_batches():
    lines = [json.dumps({"id": i, "s": f"v{i}", "f": i / 3, "j": [i]}).encode() for i in range(20_000)]
    data, spans = inputs(lines)
    expected = compiled.Encoder().encode(data, spans).batch
    assert all(batch.equals(expected) for batch in on_two_threads(lambda: compiled.Encoder().encode(data, spans).batch))


# ---------------------------------------------------------------------------
# Differential: a declared schema, generated values that fit it or not

DECLARED = {
    "id": "int64", "price": "float64", "paid": "bool", "note": "string", "ts": "timestamp",
    "ts_ms": "timestamp[ms]", "day": "date", "payload": "json", "tags": "list<string>",
    "address": "struct<city: string, zip: int64, geo: struct<lat: float64, lon: float64>>",
    "items": "list<struct<sku: string, qty: int64, at: timestamp[s], flags: list<bool>>>",
    "matrix": "list<list<int64>>",
}
DECLARED_SCHEMA = declared_schema(DECLARED)
EPOCH_LIMITS = {"timestamp": 253402300799999999, "timestamp[ms]": 253402300799999, "timestamp[s]": 253402300799}
DATES = st.dates().map(datetime.date.isoformat) | st.sampled_from(["2024-02-30", "2023-02-29", "0000-01-01"])


def fitting(type_string: str):
    """Values of `type_string` (or null), as json.loads would give them."""
    if type_string.startswith("list<"):
        return st.lists(value_of(type_string[5:-1]), max_size=3)
    if type_string.startswith("struct<"):
        fields = {}
        body, depth, start = type_string[7:-1], 0, 0
        for i, char in enumerate(body + ","):
            depth += {"<": 1, ">": -1}.get(char, 0)
            if char == "," and depth == 0:
                name, child = body[start:i].split(":", 1)
                fields[name.strip()] = value_of(child.strip())
                start = i + 1
        extra = st.dictionaries(st.sampled_from(["other", "x"]), SCALARS, max_size=1)
        return st.builds(lambda chosen, more: {**more, **chosen},
                         st.fixed_dictionaries({}, optional=fields), extra)
    if type_string.startswith("timestamp"):
        limit = EPOCH_LIMITS[type_string]
        return TIMESTAMPS | st.integers(-limit // 4, limit)
    return {
        "int64": st.integers(-(2**63), 2**63 - 1), "float64": st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(-(2**70), 2**70), "bool": st.booleans(), "string": st.text(max_size=6) | TIMESTAMPS,
        "date": DATES, "json": VALUES,
    }[type_string]


def value_of(type_string: str):
    """Mostly fitting values, sometimes null, now and then (1 in 20) anything at all."""
    return st.integers(0, 19).flatmap(
        lambda dice: VALUES if dice == 0 else st.none() if dice < 3 else fitting(type_string))


DECLARED_OBJECTS = st.builds(
    lambda chosen, extra: {**chosen, **extra},
    st.fixed_dictionaries({}, optional={name: value_of(t) for name, t in DECLARED.items()}),
    st.dictionaries(st.sampled_from(["extra", "more"]), SCALARS, max_size=1),
)


@st.composite
def declared_lines(draw, max_lines=6):
    lines = []
    for obj in draw(st.lists(DECLARED_OBJECTS, min_size=1, max_size=max_lines)):
        text = json.dumps(obj, **draw(STYLES)).encode()
        if obj and draw(st.integers(0, 4)) == 0:  # a repeated key: the first value is not judged
            key = json.dumps(draw(st.sampled_from(sorted(obj)))).encode()
            text = b"{" + key + b":" + json.dumps(draw(VALUES)).encode() + b"," + text[1:]
        lines.append(text)
    return lines


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(declared_lines(), min_size=1, max_size=3), st.booleans())
def test_declared_schema_values_agree(calls, strict):
    for lines, result in assert_same_results(calls, schema=DECLARED_SCHEMA, strict=strict):
        assert all(reason.startswith("field '") for _, reason in result.errors)
        rejected = {index for index, _ in result.errors}
        accepted = [json.loads(line) for i, line in enumerate(lines) if i not in rejected]
        if result.batch is None:
            continue
        assert result.batch.num_rows == len(accepted)
        assert result.batch.schema.names[:len(DECLARED)] == list(DECLARED)
        for name in ("id", "paid", "note", "tags", "matrix"):
            assert result.batch.column(name).to_pylist() == [obj.get(name) for obj in accepted]
        if strict:
            assert result.batch.num_columns == len(DECLARED)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(declared_lines(max_lines=5), st.data())
def test_declared_schema_corrupted_lines_agree(lines, data):
    broken = [corrupt(line, data) if data.draw(st.booleans()) else line for line in lines]
    assert_same_results([lines, broken], schema=DECLARED_SCHEMA, strict=data.draw(st.booleans()))
