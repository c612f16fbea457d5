"""Declared table schemas: column type strings -> a pyarrow.Schema, and the
checked view of such a schema that both encoders build their columns from.

A table's config may declare columns (see README, "Declared schemas"):

    [tables.orders.columns]
    id = "int64"
    ts = "timestamp[ms]"
    tags = "list<string>"
    address = "struct<city: string, zip: int64>"

`declared_schema` parses those strings into the `pa.Schema` that
`Encoder(table, schema=...)` takes; `declared_types` is how an Encoder checks
that schema (whoever built it) and reads it as a tree of `DeclaredType`.

Type strings:

    int64 | float64 | bool | string | json | date
    timestamp | timestamp[s] | timestamp[ms] | timestamp[us]    (UTC; bare = us)
    list<T>
    struct<name: T, ...>       names: letters, digits, _ (not first a digit),
                               or a JSON string in double quotes for any other
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pyarrow as pa

__all__ = ["DeclaredType", "declared_schema", "declared_types", "parse_type", "JSON_METADATA",
           "MAX_NESTING"]

JSON_METADATA = {b"ingest.type": b"json"}
MAX_NESTING = 128  # lists/structs inside one another in a declared type
TIMESTAMP_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1}  # unit -> µs per stored unit
SCALARS = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "json": pa.string(),  # + JSON_METADATA on its field
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    **{f"timestamp[{unit}]": pa.timestamp(unit, tz="UTC") for unit in TIMESTAMP_UNITS},
}
KNOWN = "int64, float64, bool, string, json, date, timestamp[s|ms|us], list<T>, struct<name: T, ...>"
TOKEN = re.compile(r"""\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\[[A-Za-z]*\])?)
                          |(?P<quoted>"(?:[^"\\]|\\.)*")
                          |(?P<punct>[<>,:])
                          |(?P<other>\S))""", re.VERBOSE)


# ---------------------------------------------------------------------------
# Type strings -> pyarrow


def declared_schema(columns: dict[str, str]) -> pa.Schema:
    """The schema of a table's `[tables.NAME.columns]`: one nullable field per
    column, in the given order. ValueError names the column and the problem."""
    fields = []
    for name, text in columns.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"declared column names must be non-empty strings, not {name!r}")
        if not isinstance(text, str):
            raise ValueError(f"column {name!r}: the type must be a string such as \"int64\", not {text!r}")
        try:
            field = parse_type(text, name)
        except ValueError as error:
            raise ValueError(f"column {name!r}: {error}") from None
        fields.append(field)
    return pa.schema(fields)


def parse_type(text: str, name: str = "item") -> pa.Field:
    """One type string as a nullable pyarrow field called `name`."""
    tokens = _tokens(text)
    parser = _TypeParser(text, tokens)
    field = parser.field(name, 0)
    if parser.peek() is not None:
        raise parser.error("unexpected text after the type")
    return field


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, token, position) of each token; whitespace separates, nothing else."""
    tokens = []
    position = 0
    while True:
        match = TOKEN.match(text, position)
        if match is None:  # only whitespace is left
            return tokens
        kind = match.lastgroup
        tokens.append((kind, match.group(kind), match.start(kind)))
        position = match.end()


class _TypeParser:
    def __init__(self, text: str, tokens: list[tuple[str, str, int]]):
        self.text = text
        self.tokens = tokens
        self.at = 0

    def error(self, what: str) -> ValueError:
        where = self.tokens[self.at][2] if self.at < len(self.tokens) else len(self.text)
        return ValueError(f"{what} at position {where} of {self.text!r}")

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str) -> None:
        if self.peek() != expected:
            found = "the end" if self.peek() is None else repr(self.peek())
            raise self.error(f"expected {expected!r}, found {found}")
        self.at += 1

    def field(self, name: str, depth: int) -> pa.Field:
        if self.at >= len(self.tokens):
            raise self.error(f"expected a type ({KNOWN})")
        kind, word, _ = self.tokens[self.at]
        if kind != "word":
            raise self.error(f"expected a type ({KNOWN}), found {word!r}")
        if word in SCALARS:
            self.at += 1
            return pa.field(name, SCALARS[word], metadata=JSON_METADATA if word == "json" else None)
        if word not in ("list", "struct"):
            hint = " (units: s, ms, us)" if word.startswith("timestamp[") else f" ({KNOWN})"
            raise self.error(f"unknown type {word!r}{hint}")
        if depth + 1 > MAX_NESTING:
            raise self.error(f"more than {MAX_NESTING} nested lists/structs")
        self.at += 1
        self.take("<")
        if word == "list":
            item = self.field("item", depth + 1)
            self.take(">")
            return pa.field(name, pa.list_(item))
        children = []
        seen = set()
        while True:
            child = self.name()
            if child in seen:
                raise self.error(f"struct field {child!r} is declared twice")
            seen.add(child)
            self.take(":")
            children.append(self.field(child, depth + 1))
            if self.peek() == ">":
                self.at += 1
                return pa.field(name, pa.struct(children))
            self.take(",")

    def name(self) -> str:
        if self.at >= len(self.tokens):
            raise self.error("expected a struct field name")
        kind, token, _ = self.tokens[self.at]
        if kind == "word" and "[" not in token:
            self.at += 1
            return token
        if kind == "quoted":
            self.at += 1
            name = json.loads(token)
            if name:
                return name
            self.at -= 1
        raise self.error(f"expected a struct field name, found {token!r}")


# ---------------------------------------------------------------------------
# pyarrow -> the tree the encoders build columns from


@dataclass(frozen=True)
class DeclaredType:
    """A declared column's type as the encoders see it."""

    kind: str  # bool int64 float64 string json date timestamp list struct
    arrow: pa.DataType  # what the column's Arrow array is
    divisor: int = 1  # timestamp: µs per stored unit (s = 1,000,000)
    item: DeclaredType | None = None  # list: the element type
    fields: tuple[tuple[str, DeclaredType], ...] = ()  # struct: its fields, in order

    @property
    def nesting(self) -> int:
        """How many lists/structs this type nests (a scalar: 0)."""
        if self.kind == "list":
            return 1 + self.item.nesting
        if self.kind == "struct":
            return 1 + max(child.nesting for _, child in self.fields)
        return 0


def declared_types(schema: pa.Schema, max_depth: int) -> list[tuple[str, DeclaredType]]:
    """Checks a schema given to an Encoder and reads it as (name, type) pairs.

    Every field must be nullable and of a type a type string can name; a
    value of the type must fit within `max_depth` (the line's object is depth
    1, so a column nests at most max_depth - 1 lists/structs)."""
    if not isinstance(schema, pa.Schema):
        raise TypeError(f"schema must be a pyarrow.Schema, not {type(schema).__name__}")
    columns = []
    for field in schema:
        if not field.name:
            raise ValueError("a declared column has an empty name")
        declared = _declared(field, field.name)
        limit = min(MAX_NESTING, max_depth - 1)
        if declared.nesting > limit:
            raise ValueError(f"column {field.name!r}: its type nests {declared.nesting} lists/structs, "
                             f"more than {limit} (max_depth {max_depth}, at most {MAX_NESTING})")
        columns.append((field.name, declared))
    names = [name for name, _ in columns]
    if len(set(names)) != len(names):
        raise ValueError(f"a column is declared twice: {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    return columns


def _declared(field: pa.Field, path: str) -> DeclaredType:
    t = field.type
    if not field.nullable:
        raise ValueError(f"column {path!r}: declared fields must be nullable")
    if is_json_field(field):
        if t != pa.string():
            raise ValueError(f"column {path!r}: a json field must be an Arrow string, not {t}")
        return DeclaredType("json", t)
    if pa.types.is_timestamp(t):
        if t.unit not in TIMESTAMP_UNITS or t.tz != "UTC":
            raise ValueError(f"column {path!r}: timestamps must be timestamp[s|ms|us, tz=UTC], not {t}")
        return DeclaredType("timestamp", t, TIMESTAMP_UNITS[t.unit])
    for kind in ("int64", "float64", "bool", "string", "date"):
        if t == SCALARS[kind]:
            return DeclaredType(kind, t)
    if pa.types.is_list(t) and not pa.types.is_large_list(t):
        return DeclaredType("list", t, item=_declared(t.value_field, path + "[]"))
    if pa.types.is_struct(t):
        if t.num_fields == 0:
            raise ValueError(f"column {path!r}: a struct needs at least one field")
        children = tuple((t.field(i).name, _declared(t.field(i), f"{path}.{t.field(i).name}"))
                         for i in range(t.num_fields))
        names = [name for name, _ in children]
        if "" in names or len(set(names)) != len(names):
            raise ValueError(f"column {path!r}: struct field names must be non-empty and distinct")
        return DeclaredType("struct", t, fields=children)
    raise ValueError(f"column {path!r}: Arrow type {t} cannot be declared ({KNOWN})")


def is_json_field(field: pa.Field) -> bool:
    """Nested values are kept as JSON text, marked by the encoder."""
    return bool(field.metadata) and field.metadata.get(b"ingest.type") == b"json"


def conform_batch(batch: pa.RecordBatch, declared: pa.Schema | None = None, strict: bool = False) -> pa.RecordBatch:
    """Rows that arrive already structured (an Arrow IPC body), in the types
    the sinks take: dictionaries decoded, large and view types made plain,
    and, for a table with declared columns, each declared column cast to its
    type (safely: no value may change). ValueError naming the column when a
    type has no place in a table, a value does not fit its declared type, or
    a strict table gets an undeclared column."""
    fields = {f.name: f for f in declared} if declared is not None else {}
    columns, names = [], []
    for field, column in zip(batch.schema, batch.columns):
        target = fields.get(field.name)
        if target is None and strict:
            raise ValueError(f"column {field.name!r} is not declared for this table, which is strict")
        plain = _plain_type(field.type, field.name)
        try:
            if target is not None:
                wanted = pa.string() if is_json_field(target) else target.type
                if is_json_field(target) and not pa.types.is_string(plain):
                    raise ValueError(f"column {field.name!r} is declared json: send it as JSON text (utf8)")
                column = column.cast(wanted, safe=True)
            elif plain != field.type:
                column = column.cast(plain, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ValueError(f"column {field.name!r} of type {field.type} cannot be read as "
                             f"{target.type if target is not None else plain}: {exc}") from None
        columns.append(column)
        names.append(field.name)
    if len(set(name.lower() for name in names)) != len(names):
        raise ValueError("two columns have the same name but for case; column names are case-insensitive")
    schema = pa.schema([pa.field(n, c.type, metadata=(fields[n].metadata if n in fields else None))
                        for n, c in zip(names, columns)])
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _plain_type(kind: pa.DataType, name: str) -> pa.DataType:
    """The type a column of `kind` lands as; ValueError for one with no place in a table."""
    if pa.types.is_dictionary(kind):
        return _plain_type(kind.value_type, name)
    if pa.types.is_large_string(kind) or getattr(pa.types, "is_string_view", lambda _: False)(kind):
        return pa.string()
    if (pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
            or pa.types.is_string(kind) or pa.types.is_timestamp(kind) or pa.types.is_date32(kind)):
        return pa.float64() if pa.types.is_float16(kind) else kind
    if pa.types.is_date64(kind):
        return pa.date32()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.list_(pa.field(kind.value_field.name, _plain_type(kind.value_type, name)))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _plain_type(f.type, f"{name}.{f.name}")) for f in kind])
    raise ValueError(f"column {name!r} has type {kind}, which no table column takes (send booleans, integers, "
                     "floats, strings, timestamps, dates, lists or structs of them)")
