"""Which sinks there are: a name (`--sink NAME`) -> how to open it from the
settings and how to query what it left in a data directory with no server
running. A new sink is one folder under `ingest/sinks/` plus one entry here;
each entry imports its sink only when it is used."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class SinkUnavailable(Exception):
    """The sink cannot be opened: a package it needs is missing, or its node id is not this directory's."""


@dataclass(frozen=True)
class SinkKind:
    name: str
    open: Callable  # (settings) -> Sink
    has_data: Callable  # (settings) -> bool: this sink wrote into the data directory
    query: Callable  # (settings, sql) -> pa.Table, with no server running
    single_writer: bool = False  # one write at a time (DuckDB's one writer connection), whatever --max-flushes-in-flight
    compact: Callable | None = None  # (settings, table) -> dict: `ingest compact`, beside a running server
    vacuum: Callable | None = None  # (settings, table or None, hours) -> [removed paths]: `ingest vacuum`


def _open_duckdb(settings):
    from ingest.sinks.duckdb import DuckDBSink
    return DuckDBSink(settings.duckdb_path)


def _query_duckdb(settings, sql):
    from ingest.sinks.duckdb import query_file
    return query_file(settings.duckdb_path, sql)


def _open_parquet(settings):
    from ingest.sinks.parquet import ParquetSink
    return ParquetSink(settings.parquet_dir, settings.partition_keys)


def _query_parquet(settings, sql):
    from ingest.sinks.parquet import query_directory
    return query_directory(settings.parquet_dir, sql)


def _open_delta(settings):
    from ingest.durability.node import node_id
    try:
        import deltalake  # noqa: F401
    except ImportError:
        raise SinkUnavailable("--sink delta needs the deltalake package: pip install 'ingest[delta]'") from None
    from ingest.sinks.delta import DeltaSink, storage_options
    return DeltaSink(settings.delta_root, node_id(settings.data_dir, settings.node_id), settings.data_dir,
                     storage_options(settings), settings.partition_keys, settings.delta_commit_retries)


def _delta_has_data(settings):
    from ingest.sinks.delta.sink import TABLES_FILE
    return (settings.data_dir / TABLES_FILE).exists()


def _query_delta(settings, sql):
    from ingest.sinks.delta import query_tables, storage_options
    return query_tables(settings.delta_root, storage_options(settings), sql)


def _compact_delta(settings, table):
    from ingest.sinks.delta import storage_options
    from ingest.sinks.delta.maintenance import compact
    return compact(settings.delta_root, table, storage_options(settings), commit_retries=settings.delta_commit_retries)


def _vacuum_delta(settings, table, hours):
    from ingest.sinks.delta import list_tables, storage_options
    from ingest.sinks.delta.maintenance import vacuum
    options = storage_options(settings)
    tables = [table] if table else list_tables(settings.delta_root, options)
    return [path for name in tables for path in vacuum(settings.delta_root, name, options, hours)]


def _compact_parquet(settings, table):
    from ingest.sinks.parquet import compact_table
    return compact_table(settings.parquet_dir, table)


SINKS: dict[str, SinkKind] = {}


def register(kind: SinkKind) -> None:
    SINKS[kind.name] = kind


register(SinkKind("duckdb", _open_duckdb, lambda settings: settings.duckdb_path.exists(), _query_duckdb,
                  single_writer=True))
register(SinkKind("parquet", _open_parquet, lambda settings: settings.parquet_dir.exists(), _query_parquet,
                  compact=_compact_parquet))
register(SinkKind("delta", _open_delta, _delta_has_data, _query_delta, compact=_compact_delta, vacuum=_vacuum_delta))


def open_sink(settings):
    """The sink `settings.sink` names, wrapped in the fault injection it asks for."""
    sink = SINKS[settings.sink].open(settings)
    if settings.sink_delay_ms:
        from ingest.sinks.fault import SlowSink
        sink = SlowSink(sink, settings.sink_delay_ms / 1000)
    return sink


def query_offline(settings, sql: str):
    """SQL over what the sinks left in the data directory: the sink it was
    served with, else the first sink that wrote there."""
    for kind in (SINKS[settings.sink], *SINKS.values()):
        if kind.has_data(settings):
            return kind.query(settings, sql)
    return SINKS["parquet"].query(settings, sql)  # nothing landed yet: views over no files, without creating a database
