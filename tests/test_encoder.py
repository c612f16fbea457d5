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

import ingest._encoder as compiled
import ingest._reference.encoder as reference
from ingest._protocols import EncodeResult

MODULES = {"cython": compiled, "python": reference}
UTC = datetime.timezone.utc
TIMESTAMP = pa.timestamp("us", tz="UTC")
JSON_META = {b"ingest.type": b"json"}


def inputs(lines: list[bytes]) -> tuple[bytes, array]:
    offsets = array("q")
    position = 0
    for line in lines:
        offsets.extend((position, position + len(line)))
        position += len(line)
    return b"".join(lines), offsets


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
    result = encode(encoder, [
        b'{"max":9223372036854775807,"min":-9223372036854775808,'
        b'"over":9223372036854775808,"under":-9223372036854775809,"huge":1e400,"zero":-0}',
    ])
    types = {field.name: field.type for field in result.batch.schema}
    assert types == {"max": pa.int64(), "min": pa.int64(), "over": pa.float64(),
                     "under": pa.float64(), "huge": pa.float64(), "zero": pa.int64()}
    assert columns(result.batch) == {
        "max": [2**63 - 1], "min": [-(2**63)], "over": [2.0**63], "under": [-(2.0**63)],
        "huge": [float("inf")], "zero": [0],
    }


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
    (b'"2024-01-01T00:00:00Z"', b'"soon"', "field 'v': expected timestamp, got string"),
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


def assert_same_results(lines_per_call: list[list[bytes]]) -> list[tuple[list[bytes], EncodeResult]]:
    """Feeds both implementations the same calls; returns the compiled results."""
    encoders = {name: module.Encoder("t") for name, module in MODULES.items()}
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
    results = [None, None]

    def work(slot):
        results[slot] = compiled.Encoder().encode(data, spans).batch

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(batch.equals(expected) for batch in results)
