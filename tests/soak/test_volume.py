"""The sends the server is built for, checked for exactly-once landing:
1,000,000 events over one TCP connection and 100,000 over HTTP in
1,000-event requests, into each sink."""
import http.client

import pytest

from ingest.testing.corpus import ndjson

TCP_EVENTS = 1_000_000
HTTP_EVENTS = 100_000
PER_REQUEST = 1_000


@pytest.fixture(scope="module")
def tcp_corpus():
    return ndjson(TCP_EVENTS, seed=7)


@pytest.mark.parametrize("sink", ["duckdb", "parquet"])
def test_million_events_over_tcp_and_hundred_thousand_over_http_land_exactly_once(start_server, sink, tcp_corpus):
    server = start_server("--sink", sink)
    with server.tcp_connect() as sock:
        sock.sendall(tcp_corpus)
    conn = http.client.HTTPConnection(server.host, server.http_port)
    for start in range(0, HTTP_EVENTS, PER_REQUEST):
        conn.request("POST", "/v1/ingest/http_events", body=ndjson(PER_REQUEST, seed=start, start=start),
                     headers={"Content-Type": "application/x-ndjson"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
    conn.close()
    server.wait_landed("events", TCP_EVENTS)
    server.wait_landed("http_events", HTTP_EVENTS)
    for table, expected in (("events", TCP_EVENTS), ("http_events", HTTP_EVENTS)):
        rows = server.query(
            f"SELECT count(*) AS n, count(DISTINCT id) AS ids, min(id) AS lo, max(id) AS hi, "
            f"count(coupon) AS coupons, count(ts) AS ts, sum(CASE WHEN ok THEN 1 ELSE 0 END) AS ok FROM {table}"
        ).to_pylist()
        assert rows == [{"n": expected, "ids": expected, "lo": 0, "hi": expected - 1,
                         "coupons": (expected + 2) // 3, "ts": expected, "ok": expected - expected // 5}]
    counters = server.stats("events")
    assert counters["rejected"] == 0 and counters["buffered"] == 0
    assert server.stop() == 0
