"""What speaking an SDK's wire contract costs: events/s acknowledged through
Segment's POST /v1/batch against the same events as NDJSON on
POST /v1/ingest/{table}, in the same run, on the same server.

    python bench/sdk_endpoints.py [--senders 4] [--seconds 10] [--batch 100]

Starts a server (a real subprocess on loopback, DuckDB sink, default
settings), then for each endpoint `--senders` processes that each keep one
connection and POST `--batch`-message bodies back to back for `--seconds`
(what a Segment SDK does with upload_size=100, minus its queue). Each
message is 200-odd bytes of Segment track call with its own messageId, so no
retry is deduplicated away. Prints events/s for each and the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from http_load import run_senders  # noqa: E402  (bench/, beside this script)
from ingest.testing.server_process import ServerProcess  # noqa: E402


def track(n: int) -> dict:
    return {"type": "track", "messageId": "%s", "userId": f"user{n % 1000}", "event": "Order Completed",
            "properties": {"order_id": n, "total": 19.99, "currency": "EUR"}, "timestamp": "2026-12-07T12:00:00.000Z",
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}}}


def body_template(endpoint: str, batch: int) -> bytes:
    """One body with a %s where each message's id goes: filled anew per request, so no two are the same."""
    messages = [track(i) for i in range(batch)]
    if endpoint == "segment":
        return json.dumps({"batch": messages, "sentAt": "2026-12-07T12:00:01.000Z"}).encode()
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def measure(port: int, endpoint: str, senders: int, batch: int, seconds: float) -> float:
    path, content_type = (("/v1/batch", "application/json") if endpoint == "segment"
                          else ("/v1/ingest/ndjson_tracks", "application/x-ndjson"))
    return run_senders([port] * senders, path, content_type, body_template(endpoint, batch), batch, seconds) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=100)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = ServerProcess(Path(directory) / "data", [], dict(__import__("os").environ))
        try:
            rates = {endpoint: measure(server.http_port, endpoint, options.senders, options.batch, options.seconds)
                     for endpoint in ("ndjson", "segment")}
        finally:
            server.stop()
    print(f"{options.senders} senders x {options.batch}-message bodies, {options.seconds:g} s each")
    print(f"POST /v1/ingest/{{table}} (NDJSON): {rates['ndjson']:>10,.0f} events/s")
    print(f"POST /v1/batch (Segment):          {rates['segment']:>10,.0f} events/s")
    print(f"Segment / NDJSON: {rates['segment'] / rates['ndjson']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
