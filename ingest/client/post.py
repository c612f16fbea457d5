"""post_ndjson(): one prepared NDJSON body, POSTed with the clients' retries,
for tools that build their own requests (`ingest deadletter replay`)."""
from __future__ import annotations

import http.client

from ingest.client.delivery import Counters, RetryPolicy, final_reply, send_until_final
from ingest.client.transport import BlockingIO, HttpConnection, run_blocking
from ingest.client.wire import NDJSON, Address, check_table, check_wait, ingest_request


def post_ndjson(target: str | http.client.HTTPConnection, table: str, body: bytes, *, wait: str = "received",
                gzip: bool = False, idempotency_key: str | None = None, wait_timeout: float = 30.0,
                retry: RetryPolicy = RetryPolicy(), timeout: float = 30.0, token: str | None = None,
                content_type: str = NDJSON) -> dict:
    """POSTs a prepared NDJSON body (or another the server reads, as
    `content_type` says: an Arrow IPC stream) to `target` (a server URL, or
    an open http.client.HTTPConnection to reuse), retrying as the clients
    do, under one Idempotency-Key (fresh unless given), with `token` as its
    Bearer token when the server needs one. Returns the ingest reply (for
    200, 202 and 400); raises RequestTooLarge, FlushTimeout or IngestError."""
    check_table(table)
    check_wait(wait)
    owned = isinstance(target, str)
    if owned:
        address = Address.parse(target)
        connection = HttpConnection.to(address, timeout)
    else:
        address = Address(target.host, target.port, "")
        connection = HttpConnection(target)
    request = ingest_request(address.path, table, body, wait=wait, gzip=gzip, wait_timeout=wait_timeout,
                             timeout=timeout, key=idempotency_key, token=token, content_type=content_type)
    delivery = send_until_final(request, retry, Counters(), BlockingIO(connection))
    try:
        return final_reply(table, run_blocking(delivery))
    finally:
        if owned:
            connection.close()
