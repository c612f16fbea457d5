"""Shipper: the part of Client and AsyncClient written once."""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from ingest.client.batcher import Batcher
from ingest.client.delivery import Counters, RetryPolicy, send_until_final
from ingest.client.errors import ABANDONED, ClientClosed, Failure, IngestError, QueueFull, RequestTooLarge
from ingest.client.wire import Address, Request, Response, check_table, check_wait, encode_event, ingest_request

log = logging.getLogger("ingest.client")

DEFAULT_URL = "http://127.0.0.1:7080"
OVERFLOW_POLICIES = ("block", "drop", "raise")
STOP = object()  # the shipper's last step


class Shipper(Counters):
    """What Client and AsyncClient share: options, the queue, serialising,
    delivery and the accounting of its outcome. The subclasses add the thread
    or the task, and the locking that goes with it."""

    def __init__(self, url: str = DEFAULT_URL, *, batch_events: int = 1000, batch_bytes: int = 1 << 20,
                 max_request_bytes: int = 8 << 20, flush_interval: float = 0.2, max_queue: int = 100_000,
                 overflow: str = "block", wait: str = "received", wait_timeout: float = 30.0, gzip: bool = False,
                 max_retries: int = 8, backoff_base: float = 0.1, backoff_max: float = 10.0, timeout: float = 30.0,
                 on_error: Callable[[Failure], None] | None = None, token: str | None = None):
        super().__init__()
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, not {overflow!r}")
        check_wait(wait)
        for name, value in (("batch_events", batch_events), ("batch_bytes", batch_bytes),
                            ("max_request_bytes", max_request_bytes), ("max_queue", max_queue)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value!r}")
        self._address = Address.parse(url)
        self._batcher = Batcher(batch_events, min(batch_bytes, max_request_bytes), flush_interval, max_queue)
        self._max_request_bytes = max_request_bytes
        self._overflow = overflow
        self._wait = wait
        self._wait_timeout = wait_timeout
        self._gzip = gzip
        self._policy = RetryPolicy(max_retries, backoff_base, backoff_max)
        self._timeout = timeout
        self._on_error = on_error
        self._token = token  # sent as `Authorization: Bearer <token>`
        self._tables: set[str] = set()  # names already checked
        self._closed = False
        self._current = None  # the shipper's connection while it sends, for close() to interrupt
        self.dropped = 0  # events refused by overflow="drop"
        self._setup()

    def _setup(self) -> None:
        raise NotImplementedError

    @property
    def sent(self) -> int:
        """Events queued by send(); each ends up acknowledged or failed."""
        return self._batcher.added

    @property
    def pending(self) -> int:
        """Events queued and not yet acknowledged or failed."""
        return self._batcher.pending

    # sending

    def _line(self, table: str, event) -> bytes:
        if table not in self._tables:
            check_table(table)
            self._tables.add(table)
        line = encode_event(event)
        if len(line) + 1 > self._max_request_bytes:
            raise ValueError(f"an event of {len(line)} bytes for table {table!r} is over max_request_bytes "
                             f"({self._max_request_bytes}); make it smaller or raise the limit")
        return line

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the ingest client is closed")

    def _room_or_closed(self) -> bool:
        return self._closed or self._batcher.has_room()

    def _queue_full(self) -> QueueFull:
        return QueueFull(f"{self._batcher.pending} events are waiting to be sent (max_queue="
                         f"{self._batcher.capacity}): the server at {self._address.host_header} is slow or unreachable")

    def _refuse(self) -> bool:
        """The queue is full and overflow is not "block": drops the event or raises."""
        if self._overflow == "drop":
            self.dropped += 1
            return False
        raise self._queue_full()

    def _post_request(self, table: str, events: Iterable, wait: str | None) -> Request:
        check_wait(wait or self._wait)
        body = b"".join(self._line(table, event) + b"\n" for event in events)
        if len(body) > self._max_request_bytes:
            raise RequestTooLarge(f"{len(body)} bytes of events for table {table!r} are over max_request_bytes "
                                  f"({self._max_request_bytes}); post fewer at a time, or use send()")
        return self._request(table, body, wait or self._wait)

    def _request(self, table: str, body: bytes, wait: str) -> Request:
        return ingest_request(self._address.path, table, body, wait=wait, gzip=self._gzip,
                               wait_timeout=self._wait_timeout, timeout=self._timeout, token=self._token)

    # shipping

    def _next_step(self, aborted: bool):
        """Under the client's lock: the next batch to ship, else STOP, else
        seconds until a batch is due (None: until something changes)."""
        if aborted:
            return STOP
        if self._closed:
            self._batcher.seal_all()  # closing ships everything first
        due = self._batcher.seal_due(time.monotonic())
        batch = self._batcher.take()
        if batch is not None:
            return batch
        return STOP if self._closed else due

    def _flushed(self) -> Callable[[], bool]:
        """Under the client's lock: seals every batch; the test for "all of them settled"."""
        batches = self._batcher.seal_all()
        return lambda: all(batch.settled for batch in batches)

    async def _deliver(self, table: str, lines: list[bytes], io) -> None:
        """Sends one batch until it is acknowledged or failed, halving it on 413."""
        request = self._request(table, b"\n".join(lines) + b"\n", self._wait)
        try:
            response = await send_until_final(request, self._policy, self, io)
            if response.status != 413 or len(lines) == 1:
                return self._settle(table, lines, response)
        except IngestError as exc:
            return self._fail(table, lines, len(lines), str(exc), exc.status)
        except Exception as exc:  # a bug must neither stop the shipper nor lose count of the events
            log.exception("ingest client: delivering %d events to %r failed", len(lines), table)
            return self._fail(table, lines, len(lines), f"client error: {exc!r}", None)
        half = len(lines) // 2
        await self._deliver(table, lines[:half], io)
        await self._deliver(table, lines[half:], io)
        return None

    def _settle(self, table: str, lines: list[bytes], response: Response) -> None:
        reply, status = response.reply, response.status
        if reply is None:
            if 200 <= status < 300:
                return self._count(acknowledged=len(lines))
            return self._fail(table, lines, len(lines), response.describe(), status)
        dead = reply.get("dead_lettered") or 0  # with wait=flushed: could not land
        confirmed = reply.get("accepted", 0) - dead
        self._count(acknowledged=confirmed, unflushed=confirmed if status == 504 else 0)
        rejected = reply.get("rejected") or 0
        if rejected:
            errors = [e for e in reply.get("errors", ())
                      if isinstance(e.get("line"), int) and 0 < e["line"] <= len(lines)]
            named = lines if rejected >= len(lines) else [lines[e["line"] - 1] for e in errors]
            first = f"; line {errors[0]['line']}: {errors[0].get('error')}" if errors else ""
            self._fail(table, named, rejected, f"the server rejected {rejected} of {len(lines)} events{first}", status)
        if dead:
            reasons = "; ".join(reply.get("reasons") or ()) or reply.get("error", "")
            self._fail(table, [], dead, f"the server dead-lettered {dead} events: {reasons}", status)
        return None

    def _fail(self, table: str, events: list[bytes], count: int, reason: str, status: int | None,
              quiet: bool = False) -> None:
        failure = Failure(table, count, reason, status, list(events))
        with self._counters_lock:
            self.failed.append(failure)
            self.failed_events += count
        if not quiet:
            log.warning("ingest client: %d events for table %r failed: %s", count, table, reason)
        if self._on_error is not None:
            try:
                self._on_error(failure)
            except Exception:
                log.exception("ingest client: the on_error callback raised")

    def _abandon(self) -> None:
        """Under the client's lock, once the shipper stopped: fails what is left."""
        left = self._batcher.abandon()
        for batch in left:
            self._fail(batch.table, batch.lines, len(batch.lines), ABANDONED, None, quiet=True)
        if left:
            log.warning("ingest client: %d events failed: %s", sum(len(batch.lines) for batch in left), ABANDONED)
