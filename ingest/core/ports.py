"""All the core needs from outside it: where batches land (Sink), where
intake is logged before it is buffered (Log), and the errors they hand back.
Sources, sinks and the write-ahead log implement these; the core never
imports them."""
from __future__ import annotations

import asyncio
from typing import Callable, Protocol

import numpy as np
import pyarrow as pa

from ingest.core.batch import BatchId, Ledger


class LogUnavailable(OSError):
    """The log cannot take records now (no space, an I/O error): the caller
    refuses the input (503, a paused connection) rather than acknowledge it."""


class Log(Protocol):
    """The write-ahead log as the pipeline sees it. Every append either
    returns the record's lsn (consecutive, never reused) or raises
    LogUnavailable having written nothing."""

    @property
    def unavailable(self) -> bool:
        """An append failed a moment ago: inputs hold off before trying again."""

    def append(self, table: str, spans: np.ndarray | memoryview, data, meta: bytes = b"", keyed: bool = False) -> int:
        """Logs one group of lines (`spans`: int64 start, end pairs into `data`, an array or a memoryview)
        as one record; `keyed`: its request carries an idempotency key."""

    def append_batch(self, table: str, batch: pa.RecordBatch, meta: bytes = b"", keyed: bool = False) -> int:
        """Logs rows that are already structured as one record."""

    def synced(self, lsn: int) -> asyncio.Future | None:
        """A future that resolves once `lsn` is durable, or None if it already is."""

    def when_synced(self, lsn: int, callback: Callable[[OSError | None], None]) -> bool:
        """Calls `callback(None)` once `lsn` is durable (`callback(OSError)` if
        its fsync failed); False, with no call, when it is durable already."""

    def settle(self, table: str, lsn: int) -> None:
        """Every record of `table` up to `lsn` has landed or been dead-lettered."""


class QueryInterrupted(Exception):
    """A running query was stopped: the server is shutting down, or its client went away."""


class QueryTooLarge(Exception):
    """A query result grew past its cap (--max-query-bytes)."""


class QueryTimedOut(QueryInterrupted):
    """A query ran past --query-timeout and was interrupted."""


class QueryRefused(Exception):
    """A statement the query endpoint does not run: it is not a read (DDL,
    DML, SET, COPY, ATTACH, INSTALL, PRAGMA, ...)."""


class Sink(Protocol):
    name: str

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        """Land one batch atomically: all of its rows or none, with its id in
        the same commit. False when the id had already landed."""

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
        """A bisected batch is done: each slice landed or was dead-lettered."""

    def ledger(self, log: str = "") -> Ledger:
        """Every batch id of `log` that has landed ("": this node's
        write-ahead log; an import's file names its own log)."""

    def is_data_error(self, exc: BaseException) -> bool:
        """True when `write` failed because of the rows, not the environment."""

    def is_environment_error(self, exc: BaseException) -> bool:
        """True when `write` failed because of the environment (no space, an
        I/O error, permission, a locked or unreachable store): the same rows
        can land once it is back."""

    def query(self, sql: str, running=None, max_bytes: int | None = None) -> pa.Table:
        """Run SQL over the landed tables, safe while writes go on;
        `running` lets another thread interrupt it; a result over
        `max_bytes` raises QueryTooLarge."""

    def resolve_table(self, table: str) -> str:
        """The table's name in the sink: names are case-insensitive, the
        first spelling (or the one the sink already has) wins."""

    def close(self) -> None: ...
