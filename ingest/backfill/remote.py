"""An import through a running server (`--target URL`): each chunk is one
POST /v1/ingest/{table} (NDJSON as it is in the file; Parquet rows as an
Arrow IPC stream), sent with the clients' retries, which wait out 429 and
503 for as long as the server's Retry-After asks. Its Idempotency-Key is
the file's log name and the chunk's place in the file, so a chunk sent
again after a crash (or by a retry whose answer was lost) lands once.

A few chunks are in flight at once; answers are taken in order, so the
manifest's `acknowledged` offset (saved after each answer) is always the
end of a stretch the server has in its write-ahead log."""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from ingest.backfill.job import Job
from ingest.backfill.progress import Progress, Summary
from ingest.backfill.readers import ReadOptions, chunks
from ingest.client import IngestError
from ingest.client.delivery import RetryPolicy
from ingest.client.errors import RequestTooLarge
from ingest.client.post import post_ndjson

ARROW_STREAM = "application/vnd.apache.arrow.stream"
# about ten minutes of retries (429 and 503 wait at least their Retry-After), then the import stops, resumable
RETRY = RetryPolicy(max_retries=40, backoff_base=0.2, backoff_max=15.0)
ERRORS_SHOWN = 5  # rejected lines named on stderr; all of them are in the server's dead-letter store


class ImportFailed(Exception):
    """The server would not take a chunk (after retries); one line."""


class ThroughServer:
    def __init__(self, url: str, token: str | None, job: Job, options: ReadOptions, progress: Progress,
                 max_errors: int | None, concurrency: int, stdin_stream=None):
        self.url, self.token = url, token
        self.job = job
        self.options = options
        self.progress = progress
        self.max_errors = max_errors
        self.concurrency = max(1, concurrency)
        self.stdin_stream = stdin_stream
        self.summary = Summary(job.table, resumable=job.resumable)
        self._stop = threading.Event()
        self._shown = 0

    def run(self) -> Summary:
        previous = {sig: signal.signal(sig, self._interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="import-send")
        try:
            for index, file in self.job.to_read(self.summary, self.progress):
                if self._stop.is_set():
                    break
                if self._import_file(index, file, pool):
                    self.job.complete.add(index)
                    self._save()
        finally:
            pool.shutdown(wait=True)
            self.summary.seconds = time.monotonic() - self.progress.started  # as the bar counts it
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.summary

    def _interrupted(self, sig, frame) -> None:
        if not self._stop.is_set():
            self.summary.stopped = f"{signal.Signals(sig).name} received; what was sent has been acknowledged"
            self._stop.set()

    def _import_file(self, index: int, file, pool: ThreadPoolExecutor) -> bool:
        start = self.job.acknowledged.get(index, 0)
        self.summary.files += 1
        if start:
            self.summary.files_resumed += 1
        self.progress.file_started(index, file.name, file.size, start)
        in_flight: deque[tuple[Future, object]] = deque()
        finished = False
        try:
            for chunk in chunks(file, start, self.options, self.stdin_stream):
                if self._stop.is_set():
                    break
                body, content_type = chunk.body, None
                if chunk.rows is not None:
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_stream(sink, chunk.rows.schema) as writer:
                        writer.write_batch(chunk.rows)
                    body, content_type = sink.getvalue().to_pybytes(), ARROW_STREAM
                key = f"{self.job.log(index)}@{chunk.start}-{chunk.end}"
                in_flight.append((pool.submit(self._send, key, body, content_type), chunk))
                while len(in_flight) >= self.concurrency:
                    self._answered(index, *in_flight.popleft())
            else:
                finished = True
            while in_flight:
                self._answered(index, *in_flight.popleft())
        finally:
            for future, _ in in_flight:
                future.cancel()
        if finished:
            self.progress.file_done(file.size)
            self.summary.bytes_read += max(file.size, 0)
        return finished and not self._stop.is_set()

    def _send(self, key: str, body: bytes, content_type: str | None) -> dict:
        extra = {"content_type": content_type} if content_type else {}
        return post_ndjson(self.url, self.job.table, body, wait="received", idempotency_key=key, retry=RETRY,
                           token=self.token, timeout=120.0, **extra)

    def _answered(self, index: int, future: Future, chunk) -> None:
        try:
            reply = future.result()
        except RequestTooLarge:
            raise ImportFailed(f"the server refused a {len(chunk.body or b''):,}-byte request as too large (413); "
                               "lower --batch-bytes below its --max-body-bytes") from None
        except IngestError as exc:
            raise ImportFailed(f"the server did not take the chunk at {chunk.start} of "
                               f"{self.job.files[index].name}: {exc}") from None
        accepted, rejected = int(reply.get("accepted", 0)), int(reply.get("rejected", 0))
        self.summary.events_read += chunk.events
        self.summary.events_landed += accepted
        self.summary.events_rejected += rejected
        for error in reply.get("errors", [])[: max(0, ERRORS_SHOWN - self._shown)]:
            where = chunk.origin(int(error.get("line", 1)) - 1) if chunk.origin else self.job.files[index].name
            print(f"ingest import: {where}: {error.get('error')}", file=sys.stderr)
            self._shown += 1
        self.job.acknowledged[index] = chunk.end
        self._save()
        self.progress.advance(chunk.read_bytes, chunk.events, self.summary.events_landed, self.summary.events_rejected)
        if self.summary.over_max_errors(self.max_errors):
            self._stop.set()

    def _save(self) -> None:
        if self.job.resumable:
            self.job.save()
