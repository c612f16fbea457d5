"""Python client for the ingest HTTP API: batching, backpressure and retries.

    from ingest.client import Client

    with Client("http://127.0.0.1:7080") as client:
        client.send("clicks", {"user": "ada", "event": "login"})

`Client` ships from one background thread, `AsyncClient` from one asyncio
task; both take the same options and keep the same counters. `post()` is the
request-reply form (one request, the server's answer returned), and
`post_ndjson()` POSTs a prepared NDJSON body with the same retries, for tools
that build their own requests.

What the clients do with each answer of `POST /v1/ingest/{table}`:

| answer | what happens |
| --- | --- |
| 200, 202 | acknowledged; lines the server rejected (or dead-lettered, with `wait="flushed"`) become a `Failure` |
| 400 (no valid line) | a `Failure` holding the lines; not retried |
| 413 | the batch is split in half and each half sent on its own, down to one event; then a `Failure` |
| 429, 503 (`Retry-After`) | retried after the larger of `Retry-After` and the backoff; counted in `throttled` |
| 408, other 5xx, a cut connection | retried with backoff |
| 504 with `wait="flushed"` | the server has the events (in its write-ahead log) but did not commit them in time: counted as acknowledged and in `unflushed`, not resent |
| other 4xx | a `Failure`; not retried |

An answer that carries the ingest reply (`"accepted"` in its JSON) is the
server's word on the data and is never retried, whatever its status.

Every request carries an `Idempotency-Key` (a fresh uuid4 per batch) and every
retry of that batch the same key, so the server ingests a batch once even when
a connection is cut after it took the request. Backoff is full jitter:
`random.uniform(0, min(backoff_base * 2**attempt, backoff_max))`.

The package, by concern (standard library only, beside ingest.protocol and
ingest.backoff; orjson when installed):

    errors        what the client raises; Failure
    wire          an event as an NDJSON line, the request's bytes, the answer parsed
    delivery      what an answer means, backoff, counters, the send-until-final loop
    transport     HTTP connections (http.client, asyncio streams), their pool, the I/O adapters
    batcher       each table's batch, sealed by events, bytes or age
    shipper       what both clients share: options, queue, delivery, accounting
    threaded      Client
    asynchronous  AsyncClient
    post          post_ndjson
"""
from __future__ import annotations

from ingest.client.asynchronous import AsyncClient
from ingest.client.delivery import RetryPolicy
from ingest.client.errors import ABANDONED, ClientClosed, Failure, FlushTimeout, IngestError, QueueFull, RequestTooLarge
from ingest.client.post import post_ndjson
from ingest.client.shipper import DEFAULT_URL
from ingest.client.threaded import Client
from ingest.client.wire import encode_event
from ingest.protocol import WAIT_MODES

__all__ = [
    "ABANDONED", "DEFAULT_URL", "AsyncClient", "Client", "ClientClosed", "Failure", "FlushTimeout", "IngestError",
    "QueueFull", "RequestTooLarge", "RetryPolicy", "WAIT_MODES", "encode_event", "post_ndjson",
]
