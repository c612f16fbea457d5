"""Declared schemas: type strings -> pyarrow, and the checks an Encoder makes
on the schema it is given (ingest/schema.py)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from ingest.schema import JSON_METADATA, MAX_NESTING, declared_schema, declared_types, parse_type

UTC = "UTC"


def test_every_type_string_of_the_issue():
    schema = declared_schema({
        "id": "int64", "price": "float64", "paid": "bool", "note": "string", "ts": "timestamp",
        "day": "date", "payload": "json", "tags": "list<string>",
        "address": "struct<city: string, zip: int64>",
    })
    assert schema.equals(pa.schema([
        pa.field("id", pa.int64()),
        pa.field("price", pa.float64()),
        pa.field("paid", pa.bool_()),
        pa.field("note", pa.string()),
        pa.field("ts", pa.timestamp("us", tz=UTC)),
        pa.field("day", pa.date32()),
        pa.field("payload", pa.string(), metadata=JSON_METADATA),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("address", pa.struct([("city", pa.string()), ("zip", pa.int64())])),
    ]), check_metadata=True)
    assert all(field.nullable for field in schema)


@pytest.mark.parametrize("text, unit", [("timestamp", "us"), ("timestamp[s]", "s"), ("timestamp[ms]", "ms"),
                                        ("timestamp[us]", "us")])
def test_timestamp_units_are_utc(text, unit):
    assert parse_type(text).type == pa.timestamp(unit, tz=UTC)


def test_nesting_and_spacing():
    field = parse_type(" list< struct< a : list<int64>,b:json , \"odd key\": struct<date: date> > > ", "x")
    item = field.type.value_type
    assert field.name == "x"
    assert item.field("a").type == pa.list_(pa.int64())
    assert item.field("b").metadata == JSON_METADATA
    assert item.field("odd key").type == pa.struct([("date", pa.date32())])
    assert parse_type("struct<a: list<int64>>").type == pa.struct([("a", pa.list_(pa.int64()))])


def test_json_metadata_is_kept_at_any_depth():
    field = parse_type("list<json>")
    assert field.type.value_field.metadata == JSON_METADATA
    assert not field.type.equals(pa.list_(pa.string()), check_metadata=True)


@pytest.mark.parametrize("text, message", [
    ("int", "unknown type 'int'"),
    ("INT64", "unknown type 'INT64'"),
    ("timestamp[ns]", "unknown type 'timestamp[ns]' (units: s, ms, us)"),
    ("", "expected a type"),
    ("list", "expected '<', found the end"),
    ("list<>", "expected a type"),
    ("list<int64", "expected '>', found the end"),
    ("list<int64>>", "unexpected text after the type"),
    ("struct<>", "expected a struct field name, found '>'"),
    ("struct<a int64>", "expected ':', found 'int64'"),
    ("struct<a: int64,>", "expected a struct field name"),
    ("struct<a: int64, a: bool>", "struct field 'a' is declared twice"),
    ('struct<"": int64>', "expected a struct field name"),
    ("struct<a: int64; b: bool>", "expected ',', found ';'"),
    ("list<string> x", "unexpected text after the type"),
    ("list<" * (MAX_NESTING + 1) + "int64" + ">" * (MAX_NESTING + 1), "more than 128 nested"),
])
def test_bad_type_strings_name_the_column(text, message):
    with pytest.raises(ValueError) as error:
        declared_schema({"id": "int64", "col": text})
    assert str(error.value).startswith("column 'col': ")
    assert message in str(error.value)


def test_bad_column_entries():
    with pytest.raises(ValueError, match="column 'n': the type must be a string"):
        declared_schema({"n": 5})
    with pytest.raises(ValueError, match="non-empty strings"):
        declared_schema({"": "int64"})


def test_declared_types_reads_the_tree():
    schema = declared_schema({"ts": "timestamp[ms]", "items": "list<struct<sku: string, at: timestamp[s]>>"})
    (ts_name, ts), (items_name, items) = declared_types(schema, 64)
    assert (ts_name, ts.kind, ts.divisor, ts.nesting) == ("ts", "timestamp", 1000, 0)
    assert (items_name, items.kind, items.nesting) == ("items", "list", 2)
    assert items.item.kind == "struct"
    assert [(name, t.kind, t.divisor) for name, t in items.item.fields] == [
        ("sku", "string", 1), ("at", "timestamp", 1_000_000)]


@pytest.mark.parametrize("field, message", [
    (pa.field("x", pa.int32()), "Arrow type int32 cannot be declared"),
    (pa.field("x", pa.large_string()), "cannot be declared"),
    (pa.field("x", pa.large_list(pa.int64())), "cannot be declared"),
    (pa.field("x", pa.timestamp("us")), "timestamps must be timestamp[s|ms|us, tz=UTC]"),
    (pa.field("x", pa.timestamp("ns", tz="UTC")), "timestamps must be"),
    (pa.field("x", pa.int64(), nullable=False), "must be nullable"),
    (pa.field("x", pa.list_(pa.field("item", pa.int64(), nullable=False))), "column 'x[]'"),
    (pa.field("x", pa.struct([])), "at least one field"),
    (pa.field("x", pa.struct([("a", pa.int8())])), "column 'x.a'"),
    (pa.field("x", pa.int64(), metadata=JSON_METADATA), "a json field must be an Arrow string"),
])
def test_schemas_an_encoder_refuses(field, message):
    with pytest.raises(ValueError) as error:
        declared_types(pa.schema([field]), 64)
    assert message in str(error.value)


def test_nesting_must_fit_max_depth():
    schema = pa.schema([parse_type("list<list<list<int64>>>", "x")])
    assert declared_types(schema, 4)[0][1].nesting == 3
    with pytest.raises(ValueError, match="nests 3 lists/structs, more than 2"):
        declared_types(schema, 3)


def test_not_a_schema():
    with pytest.raises(TypeError):
        declared_types({"a": "int64"}, 64)
