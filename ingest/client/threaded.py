"""Client: ships from one background thread."""
from __future__ import annotations

import threading
import time
from typing import Iterable

from ingest.client.batcher import Batch
from ingest.client.delivery import final_reply, send_until_final
from ingest.client.shipper import STOP, Shipper
from ingest.client.transport import BlockingIO, HttpConnection, Pool, run_blocking


class Client(Shipper):
    """Sends events to an ingest server in batches, from one background thread.

    Client(url="http://127.0.0.1:7080", *, batch_events=1000, batch_bytes=1<<20,
           max_request_bytes=8<<20, flush_interval=0.2, max_queue=100_000,
           overflow="block", wait="received", wait_timeout=30.0, gzip=False,
           max_retries=8, backoff_base=0.1, backoff_max=10.0, timeout=30.0,
           on_error=None, token=None)

    send(table, event) serialises the event and queues it. Each table's batch
    ships when it holds `batch_events` events or `batch_bytes` bytes, or
    `flush_interval` seconds after its first event. No request is larger than
    `max_request_bytes` (an event that alone is larger is refused by send()).

    The queue holds at most `max_queue` events, counted from send() until the
    server acknowledged them or they failed. When it is full, `overflow` says
    what send() does:
      "block": waits for room (up to send's `timeout`, then raises QueueFull);
      "drop":  drops the new event, returns False and counts it in `dropped`;
      "raise": raises QueueFull.

    `wait` is the server's ack mode: "none" (202 once parsed), "received"
    (durable in its write-ahead log) or "flushed" (committed in the sink; the
    server waits up to `wait_timeout` seconds, then answers 504, which counts
    as acknowledged and in `unflushed`: the events are durable and will land,
    and resending could only replay the same answer).

    `token` is the server's token (sent as `Authorization: Bearer <token>`),
    for a server with [[auth.tokens]] configured; a 401 or 403 is a Failure,
    a 429 over the token's quota is retried after its Retry-After.

    Counters: `sent`, `acknowledged`, `pending`, `failed` (a list of Failure,
    each passed to `on_error` too, from the shipping thread), `failed_events`,
    `dropped`, `retries`, `throttled` (429/503 answers), `unflushed`,
    `replayed` (answers replayed for a retried Idempotency-Key). Once flushed,
    sent == acknowledged + failed_events.
    """

    def _setup(self) -> None:
        self._cond = threading.Condition()
        self._abort = threading.Event()
        address, timeout = self._address, self._timeout
        self._pool = Pool(lambda: HttpConnection.to(address, timeout))
        self._thread = threading.Thread(target=self._run, name="ingest-client", daemon=True)
        self._thread.start()

    def send(self, table: str, event, *, timeout: float | None = None) -> bool:
        """Queues one event (a dict, or bytes/str holding one JSON object);
        False when overflow="drop" dropped it. `timeout`: how long "block" waits."""
        line = self._line(table, event)
        with self._cond:
            self._check_open()
            if not self._batcher.has_room():
                if self._overflow != "block":
                    return self._refuse()
                if not self._cond.wait_for(self._room_or_closed, timeout):
                    raise self._queue_full()
                self._check_open()
            if self._batcher.add(table, line, time.monotonic()):
                self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every event sent before the call is acknowledged or
        failed; False if `timeout` seconds passed first."""
        with self._cond:
            flushed = self._flushed()
            self._cond.notify_all()
            return self._cond.wait_for(flushed, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Ships what is queued and stops the thread. After `timeout` seconds,
        what is still unsent fails (reason: the client was closed); returns
        False when that happened."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            with self._cond:
                self._cond.notify_all()
            current = self._current
            if current is not None:
                current.interrupt()
            self._thread.join()
        self._pool.close()
        return not self._abort.is_set()

    def post(self, table: str, events: Iterable, *, wait: str | None = None) -> dict:
        """Sends `events` in one request now, past the queue, and returns the
        server's reply ({"accepted", "rejected", "errors", "receipt"}, for 200,
        202 and 400); raises RequestTooLarge, FlushTimeout or IngestError."""
        request = self._post_request(table, events, wait)
        connection = self._pool.take()
        try:
            response = run_blocking(send_until_final(request, self._policy, self, BlockingIO(connection)))
        finally:
            self._pool.give(connection)
        return final_reply(table, response)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not STOP:
            connection = self._current = self._pool.take()
            try:
                run_blocking(self._deliver(batch.table, batch.lines, BlockingIO(connection, self._abort)))
            finally:
                self._current = None
                self._pool.give(connection)
            with self._cond:
                self._batcher.settle(batch)
                self._cond.notify_all()
        with self._cond:
            self._abandon()
            self._cond.notify_all()

    def _next_batch(self):
        with self._cond:
            while not isinstance(step := self._next_step(self._abort.is_set()), Batch) and step is not STOP:
                self._cond.wait(step)
            return step
