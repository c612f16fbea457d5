"""The SDK sources: endpoints that speak another product's wire contract
(Segment, PostHog, OTLP) so that its unmodified SDK lands here by changing
one URL. Each is described by an `SdkSource` in its format module: the kinds
of message it carries, the table each kind lands in by default, that table's
declared columns, and its limits. `[sources.NAME]` in the config file
overrides the tables and limits:

    [sources.segment]
    tables = {track = "tracks", identify = "users_seen"}
    max_batch_bytes = 1048576

The declared columns become the table's `[tables.NAME]` unless the config
file declares that table itself.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Mapping

from ingest.protocol import table_name_problem

# the modules that each define SOURCE, an SdkSource; imported when the settings are read
SOURCE_MODULES = (
    "ingest.sources.formats.segment",
    "ingest.sources.formats.posthog",
    "ingest.sources.formats.otlp",
)


@dataclass(frozen=True)
class SdkSource:
    name: str  # [sources.NAME]
    tables: Mapping[str, str]  # kind of message -> the table it lands in by default
    columns: Mapping[str, Mapping[str, str]]  # kind -> its table's declared columns (ingest.schema type strings)
    limits: Mapping[str, int] = field(default_factory=dict)  # option -> default, e.g. max_event_bytes

    def settings(self, overrides: dict | None = None, where: str = "") -> "SourceSettings":
        """This source's settings with `[sources.NAME]`'s overrides, checked;
        ValueError names the key and what it takes."""
        overrides = dict(overrides or {})
        where = where or f"[sources.{self.name}]"
        unknown = set(overrides) - {"tables", *self.limits}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; it takes tables"
                             + "".join(f", {key}" for key in self.limits))
        tables = dict(self.tables)
        given = overrides.pop("tables", {})
        if not isinstance(given, dict):
            raise ValueError(f"{where}: tables must be a table of kind = \"table name\", e.g. "
                             f"tables = {{{next(iter(self.tables))} = \"my_table\"}}")
        for kind, table in given.items():
            if kind not in self.tables:
                raise ValueError(f"{where}: tables has no kind {kind!r}; the kinds are {', '.join(self.tables)}")
            problem = table_name_problem(table) if isinstance(table, str) else "a table name must be a string"
            if problem:
                raise ValueError(f"{where}: tables.{kind}: {problem}")
            tables[kind] = table
        limits = dict(self.limits)
        for key, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{where}: {key} must be a positive whole number (bytes)")
            limits[key] = value
        return SourceSettings(MappingProxyType(tables), MappingProxyType(limits))

    def declared_columns(self, settings: "SourceSettings") -> dict[str, Mapping[str, str]]:
        """Table name -> declared columns, under the tables the settings name."""
        return {settings.tables[kind]: columns for kind, columns in self.columns.items()}


@dataclass(frozen=True)
class SourceSettings:
    tables: Mapping[str, str]  # kind -> table
    limits: Mapping[str, int]


def sdk_sources() -> dict[str, SdkSource]:
    """Every SDK source, by name."""
    sources = (importlib.import_module(name).SOURCE for name in SOURCE_MODULES)
    return {source.name: source for source in sources}


def source_settings(raw: dict | None = None, where: str = "") -> dict[str, SourceSettings]:
    """Each SDK source's settings from the config file's [sources] table
    (defaults for those it does not name); ValueError on a mistake."""
    raw = raw or {}
    sources = sdk_sources()
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError(f"{where}[sources] must hold tables such as [sources.segment]")
    unknown = set(raw) - set(sources)
    if unknown:
        raise ValueError(f"{where}[sources.{sorted(unknown)[0]}]: no such source; the sources are "
                         f"{', '.join(sources)}")
    return {name: source.settings(raw.get(name), f"{where}[sources.{name}]") for name, source in sources.items()}


def instant(value, field: str) -> datetime | None:
    """An SDK's ISO-8601 time field (or a datetime already) as an aware
    datetime, UTC when it names no offset; ValueError naming the field."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"{field} {json.dumps(value, default=str)[:40]} is not an ISO-8601 timestamp")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
