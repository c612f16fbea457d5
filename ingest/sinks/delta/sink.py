"""Delta Lake sink: one Delta table per ingest table at URI/{table}, on a
local filesystem or an S3-compatible store, written through `deltalake`
(delta-rs), any number of servers appending to the same tables.

Exactly once across nodes: each commit carries the batch's id as Delta
app transactions of this node (`app_id` = the node id), in the same commit
as its rows. A node writes a table's batches one at a time and in log
order (one write stage per table), so the node's recorded version is a
watermark: every batch of that table up to it has landed. Before each
commit the writer compares the batch with that watermark, so a batch
replayed after a crash is recognised and not written twice (Delta's `txn`
does not refuse a duplicate by itself).

The watermark is `last lsn << 24 | rows landed`: a whole batch records all
ones in the low bits, a bisected slice the row its slice ends at, and
`{node}:first` records the batch's first lsn, so a batch of which only
some slices landed is rebuilt exactly on replay.

A batch of another log (an import's file: `BatchId.log`) keeps its own
watermark, under the app id `{node}:{log}`, in the same way."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pyarrow as pa

from ingest.core.batch import BatchId, Ledger
from ingest.sinks.identity import ColumnRefused, TableNames, fold, normalise_columns
from ingest.sinks.partitioning import PartitionKey, with_partition_columns
from ingest.sinks.sql import RunningQuery, query_arrow, quote_identifier, sandbox

log = logging.getLogger("ingest.sinks.delta")

ROW_BITS = 24
WHOLE = (1 << ROW_BITS) - 1  # the low bits of a whole batch's version
TABLES_FILE = "delta-tables"  # in the node's data directory: the tables it has written, for its ledger


def batch_version(batch_id: BatchId) -> int:
    """Where a batch (or a slice of one) puts this node's watermark."""
    if batch_id.whole:
        return batch_id.last_lsn << ROW_BITS | WHOLE
    rows = batch_id.offset + batch_id.length
    if rows >= WHOLE:
        raise ValueError(f"batch {batch_id}: a slice ending past row {WHOLE - 1} cannot be recorded")
    return batch_id.last_lsn << ROW_BITS | rows


class DeltaSink:
    name = "delta"

    def __init__(self, root: str, node_id: str, data_dir: Path, storage_options: dict | None = None,
                 partition_keys: tuple[PartitionKey, ...] = (), commit_retries: int = 100):
        self.root = root.rstrip("/")
        self.node_id = node_id
        self.storage_options = dict(storage_options or {})
        self.partition_keys = partition_keys
        self.commit_retries = commit_retries
        self._tables_file = data_dir / TABLES_FILE
        self._written = self._read_written()
        self.tables = TableNames(sorted(set(self._written) | set(list_tables(self.root, self.storage_options))))
        self._open: dict[str, object] = {}  # table -> DeltaTable, kept between writes
        self._marks: dict[tuple[str, str], int] = {}  # (table, app id) -> its watermark (-1: none yet)
        self._lock = threading.Lock()  # the caches; each table is written by one thread at a time

    # which tables this node has written (its ledger reads their watermarks)

    def _read_written(self) -> list[str]:
        try:
            return [line for line in self._tables_file.read_text().splitlines() if line]
        except FileNotFoundError:
            return []

    def _remember(self, table: str) -> None:
        """Kept before the table's first commit by this node, so the ledger never misses a commit."""
        with self._lock:
            if table in self._written:
                return
            self._written.append(table)
            self._tables_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self._tables_file, "a") as out:
                out.write(table + "\n")
                out.flush()
                os.fsync(out.fileno())

    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    def resolve_table(self, table: str) -> str:
        return self.tables.resolve(table)

    def _table(self, table: str):
        """The table's DeltaTable, brought up to date; None if it does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        cached = self._open.get(table)
        if cached is not None:
            cached.update_incremental()
            return cached
        try:
            opened = DeltaTable(self.uri(table), storage_options=self.storage_options or None)
        except TableNotFoundError:
            return None
        self._open[table] = opened
        return opened

    def app_id(self, log: str) -> str:
        """Whose watermark a batch of `log` moves: this node's log, or one of its imports' files."""
        return f"{self.node_id}:{log}" if log else self.node_id

    def _mark(self, table: str, delta_table, app: str) -> int:
        mark = self._marks.get((table, app))
        if mark is None:
            recorded = delta_table.transaction_version(app) if delta_table is not None else None
            mark = self._marks[(table, app)] = -1 if recorded is None else recorded
        return mark

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        from deltalake import CommitProperties, Transaction, write_deltalake

        table = self.tables.resolve(table)
        delta_table = self._table(table)
        version = batch_version(batch_id) if batch_id is not None else None
        app = self.app_id(batch_id.log) if batch_id is not None else self.node_id
        if version is not None and version <= self._mark(table, delta_table, app):
            return False
        schema = pa.schema(delta_table.schema().to_arrow()) if delta_table is not None else None
        partition_columns = (delta_table.metadata().partition_columns if delta_table is not None
                             else [key.name for key in self.partition_keys])
        keys = [key for key in self.partition_keys if key.name in partition_columns]
        if keys:
            batch = with_partition_columns(batch, tuple(keys))
        batch = conform_to_table(normalise_columns(batch, {fold(f.name): f.name for f in schema or ()}), schema)
        transactions = []
        if version is not None:
            transactions = [Transaction(app, version), Transaction(f"{app}:first", batch_id.first_lsn)]
        self._remember(table)
        write_deltalake(
            delta_table if delta_table is not None else self.uri(table), batch, mode="append", schema_mode="merge",
            partition_by=None if delta_table is not None else (partition_columns or None),
            storage_options=self.storage_options or None,
            commit_properties=CommitProperties(
                app_transactions=transactions, max_commit_retries=self.commit_retries,
                custom_metadata={"ingest.node": self.node_id, **({"ingest.batch": str(batch_id)} if batch_id else {})}))
        if version is not None:
            self._marks[(table, app)] = version
        return True

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
        """An empty commit that moves the watermark past the whole bisected batch."""
        if not batch_id.whole:
            return
        table = self.tables.resolve(table)
        delta_table = self._table(table)
        if delta_table is None or batch_version(batch_id) <= self._mark(table, delta_table, self.app_id(batch_id.log)):
            return
        schema = pa.schema(delta_table.schema().to_arrow())
        empty = pa.RecordBatch.from_pylist([], schema=schema)
        self.write(table, empty, batch_id)

    def ledger(self, log: str = "") -> Ledger:
        """The watermark of `log` ("": this node's write-ahead log) in each table this node has written."""
        complete: dict = {}
        partial: dict = {}
        app = self.app_id(log)
        for table in self._written:
            delta_table = self._table(table)
            if delta_table is None:
                continue
            mark = self._mark(table, delta_table, app)
            if mark < 0:
                continue
            last, rows = mark >> ROW_BITS, mark & WHOLE
            if rows == WHOLE:
                complete[table] = {(1, last)}
                continue
            first = delta_table.transaction_version(f"{app}:first")
            if first is None:  # an import's file begins at offset 0: only a missing version means none
                first = last
            if first > 1:
                complete[table] = {(1, first - 1)}
            partial[table] = {(first, last)}
        return Ledger(complete, partial)

    @staticmethod
    def is_data_error(exc: BaseException) -> bool:
        from deltalake.exceptions import SchemaMismatchError

        return isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ColumnRefused,
                                SchemaMismatchError))

    @staticmethod
    def is_environment_error(exc: BaseException) -> bool:
        """The store is unreachable or full, or other writers kept winning the
        commit race: the same rows can land later."""
        from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError

        if isinstance(exc, SchemaMismatchError):
            return False
        return isinstance(exc, (OSError, CommitFailedError, DeltaError))

    def query(self, sql: str, running: RunningQuery | None = None, max_bytes: int | None = None) -> pa.Table:
        return query_tables(self.root, self.storage_options, sql, running, max_bytes)

    def close(self) -> None:
        self._open.clear()


def conform_to_table(batch: pa.RecordBatch, schema: pa.Schema | None) -> pa.RecordBatch:
    """The batch's columns in the types the table already has. Delta
    cannot widen a column, and delta-rs would truncate 5.5 into a BIGINT
    column without a word, so a value that does not fit is refused here,
    naming the column (bisection then isolates its event)."""
    if schema is None:
        return _storable(batch)
    columns, fields, changed = [], [], False
    for field, column in zip(batch.schema, batch.columns):
        target = schema.field(field.name).type if field.name in schema.names else None
        if target is not None and target != column.type and not pa.types.is_null(target):
            if pa.types.is_null(column.type):
                column = pa.nulls(len(column), target)
            else:
                try:
                    column = column.cast(target, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                    raise ColumnRefused(f"column {field.name!r} is {target} in the Delta table, which cannot hold "
                                        f"this event's {field.type} value (Delta does not widen columns): {exc}") from None
            field, changed = field.with_type(target), True
        columns.append(column)
        fields.append(field)
    batch = pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields, metadata=batch.schema.metadata)) \
        if changed else batch
    return _storable(batch)


def _storable(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Columns no event gave a value (Arrow's null type) become strings: a
    Delta column needs a type."""
    if not any(pa.types.is_null(f.type) for f in batch.schema):
        return batch
    columns = [c.cast(pa.string()) if pa.types.is_null(c.type) else c for c in batch.columns]
    fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in batch.schema]
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields, metadata=batch.schema.metadata))


def list_tables(root: str, storage_options: dict) -> list[str]:
    """The Delta tables under `root` (directories holding a _delta_log)."""
    filesystem, base = _filesystem(root, storage_options)
    from pyarrow import fs

    try:
        entries = filesystem.get_file_info(fs.FileSelector(base, allow_not_found=True))
    except OSError as exc:
        log.warning("cannot list the Delta tables under %s: %s", root, exc)
        return []
    names = []
    for entry in entries:
        if entry.type == fs.FileType.Directory:
            log_dir = filesystem.get_file_info(f"{entry.path}/_delta_log")
            if log_dir.type == fs.FileType.Directory:
                names.append(entry.base_name)
    return sorted(names)


def _filesystem(root: str, storage_options: dict):
    """A pyarrow filesystem over `root`, from the same options delta-rs takes, for listing."""
    from pyarrow import fs

    if root.startswith("file://"):
        return fs.LocalFileSystem(), root[len("file://"):]
    options = {k.lower(): v for k, v in storage_options.items()}
    get = lambda *names: next((options[n] for n in names if n in options), None) or next(  # noqa: E731
        (os.environ[n.upper()] for n in names if os.environ.get(n.upper())), None)
    endpoint = get("aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint")
    scheme = None
    if endpoint and "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
    filesystem = fs.S3FileSystem(
        access_key=get("aws_access_key_id", "access_key_id"), secret_key=get("aws_secret_access_key", "secret_access_key"),
        session_token=get("aws_session_token", "session_token"), region=get("aws_region", "region") or "us-east-1",
        endpoint_override=endpoint, scheme=scheme or "https")
    return filesystem, root.split("://", 1)[1]


def query_tables(root: str, storage_options: dict, sql: str, running: RunningQuery | None = None,
                 max_bytes: int | None = None) -> pa.Table:
    """SQL over every Delta table under `root`, each a view of its current
    version (deltalake -> Arrow dataset -> DuckDB: DuckDB's own delta
    extension cannot be installed offline)."""
    import duckdb
    from deltalake import DeltaTable

    con = duckdb.connect(":memory:")
    try:
        seen: set[str] = set()
        for name in list_tables(root, storage_options):
            if fold(name) in seen:
                continue
            seen.add(fold(name))
            dataset = DeltaTable(f"{root}/{name}", storage_options=storage_options or None).to_pyarrow_dataset()
            con.register(f"__delta_{len(seen)}", dataset)
            con.execute(f"CREATE VIEW {quote_identifier(name)} AS SELECT * FROM __delta_{len(seen)}")
        sandbox(con)  # the views read Arrow datasets; SQL may not open files of its own
        return query_arrow(con, sql, running, max_bytes)
    finally:
        con.close()


__all__ = ["DeltaSink", "conform_to_table", "list_tables", "query_tables"]
