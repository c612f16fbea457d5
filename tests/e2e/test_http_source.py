"""HTTP ingest, end to end through a real server subprocess."""
import http.client
import json
import re
import socket

import pytest
from conftest import poll

from ingest.testing.corpus import ndjson

NEVER = ["--flush-interval", 600_000]


def test_ndjson_body_round_trip(start_server, implementation):
    server = start_server(implementation=implementation)
    status, reply = server.ingest("clicks", ndjson(300))
    assert (status, reply["accepted"], reply["rejected"], reply["errors"]) == (200, 300, 0, [])
    server.wait_landed("clicks", 300)
    assert server.query("SELECT count(DISTINCT id) AS n FROM clicks").to_pylist() == [{"n": 300}]
    assert server.stop() == 0


def test_invalid_line_in_the_middle_is_reported_and_neighbours_land(start_server, implementation):
    server = start_server(implementation=implementation)
    body = b'{"n":1}\n{"n":2\n{"n":3}\n[1,2]\n{"n":5}\n'
    status, reply = server.ingest("t", body)
    assert status == 200
    assert reply["accepted"] == 3 and reply["rejected"] == 2
    assert [e["line"] for e in reply["errors"]] == [2, 4]
    assert all(e["error"] for e in reply["errors"])
    server.wait_landed("t", 3)
    assert server.query("SELECT n FROM t ORDER BY n").to_pylist() == [{"n": 1}, {"n": 3}, {"n": 5}]
    assert server.stop() == 0


def test_no_valid_line_is_400(start_server):
    server = start_server()
    status, reply = server.ingest("t", b"not json\n{broken\n")
    assert status == 400 and reply["accepted"] == 0 and reply["rejected"] == 2
    assert server.stop() == 0


@pytest.mark.parametrize("body, headers", [
    (b"", {}), (b"\n\r\n  \n", {}), (b"[]", {"Content-Type": "application/json"}),
    (b" [ \n ] ", {"Content-Type": "application/json"}),
])
def test_a_body_without_events_is_400(start_server, body, headers):
    server = start_server()
    status, _, payload = server.http("POST", "/v1/ingest/t", body, headers)
    assert status == 400
    assert json.loads(payload)["error"].startswith("the body holds no events")
    assert "t" not in server.stats()["tables"]  # nothing was counted for the table
    assert server.stop() == 0


def test_values_that_cannot_be_stored_as_sent_are_rejected_with_the_reason(start_server, implementation):
    server = start_server(implementation=implementation)
    body = (b'{"n":1.5,"ts":"2024-01-01T00:00:00Z"}\n'
            b'{"n":1e400}\n'
            b'{"n":' + b"9" * 100_000 + b'}\n'
            b'{"ts":"0001-01-01T00:00:00+01:00"}\n'
            b'{"ts":"2024-13-01T00:00:00Z"}\n'
            b'{"n":2,"ts":"0001-01-01T01:00:00+01:00"}\n')
    status, _, payload = server.http("POST", "/v1/ingest/t?wait=flushed", body,
                                     {"Content-Type": "application/x-ndjson"})
    reply = json.loads(payload)
    assert (status, reply["landed"], reply["rejected"]) == (200, 2, 4), reply
    assert set(reply["reasons"]) == {
        "field 'n': number out of range for DOUBLE",
        "field 'ts': timestamp out of range (years 0001-9999)",
        'field \'ts\': "2024-13-01T00:00:00Z" is not an ISO-8601 timestamp'
        " (YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM])"}
    rows = server.query("SELECT n, strftime(ts, '%Y-%m-%d %H:%M:%S') AS ts FROM t ORDER BY n").to_pylist()
    assert rows == [{"n": 1.5, "ts": "2024-01-01 00:00:00"}, {"n": 2.0, "ts": "0001-01-01 00:00:00"}]
    assert server.stop() == 0


def test_too_wide_or_too_deep_events_are_rejected_per_line(start_server, implementation):
    server = start_server(implementation=implementation)
    wide = ("{" + ",".join(f'"k{i}":{i}' for i in range(10_001)) + "}").encode()
    deep = b'{"a":' + b"[" * 64 + b"]" * 64 + b"}"
    status, reply = server.ingest("t", b'{"n":1}\n' + wide + b"\n" + deep + b'\n{"n":2}\n')
    assert status == 200 and reply["accepted"] == 2
    assert reply["errors"] == [{"line": 2, "error": "more than 10000 fields in one event"},
                               {"line": 3, "error": "nesting deeper than 64"}]
    server.wait_landed("t", 2)
    assert server.query("SELECT n FROM t ORDER BY n").to_pylist() == [{"n": 1}, {"n": 2}]
    assert server.stop() == 0


def test_gzip_and_json_array_bodies(start_server):
    server = start_server()
    assert server.ingest("t", ndjson(100), gzipped=True)[1]["accepted"] == 100
    def array(first_id):
        return json.dumps([{"id": first_id + i, "tags": [i, i + 1], "v": i / 2} for i in range(50)]).encode()
    assert server.ingest("t", array(1000), content_type="application/json")[1]["accepted"] == 50
    assert server.ingest("t", array(2000), content_type="application/json", gzipped=True)[1]["accepted"] == 50
    assert server.ingest("t", b'{"id": 5000}', content_type="application/json")[1]["accepted"] == 1
    server.wait_landed("t", 201)
    assert server.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 201}]
    assert server.query("SELECT tags FROM t WHERE id = 1003").to_pylist() == [{"tags": "[3, 4]"}]
    assert server.stop() == 0


def test_chunked_transfer_encoding(start_server):
    server = start_server()
    conn = http.client.HTTPConnection(server.host, server.http_port)
    body = ndjson(200)
    chunks = [body[i:i + 777] for i in range(0, len(body), 777)]
    conn.request("POST", "/v1/ingest/chunked", body=iter(chunks), encode_chunked=True,
                 headers={"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["accepted"] == 200
    conn.close()
    assert server.stop() == 0


def test_keep_alive_serves_many_requests_on_one_connection(start_server):
    server = start_server()
    conn = http.client.HTTPConnection(server.host, server.http_port)
    for i in range(20):
        conn.request("POST", "/v1/ingest/ka", body=ndjson(5, start=i * 5), headers={"Content-Type": "application/x-ndjson"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["accepted"] == 5
    conn.close()
    server.wait_landed("ka", 100)
    assert server.stop() == 0


@pytest.mark.parametrize("method,path,body,headers,status", [
    ("GET", "/v1/ingest/t", None, {}, 405),
    ("POST", "/nowhere", b"{}", {}, 404),
    ("POST", "/v1/ingest/t", b"a,b\n1,2\n", {"Content-Type": "text/csv"}, 415),
    ("POST", "/v1/ingest/t", b"{}", {"Content-Encoding": "br"}, 415),
    ("POST", "/v1/ingest/1bad", b"{}", {}, 400),
    ("POST", "/v1/ingest/x;DROP%20TABLE%20y", b"{}", {}, 400),
    ("POST", "/v1/ingest/t", b"[{}, ", {"Content-Type": "application/json"}, 400),
    ("POST", "/v1/ingest/t", b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, 400),
])
def test_bad_requests_get_clear_status_codes(start_server, method, path, body, headers, status):
    server = start_server()
    got, reply_headers, payload = server.http(method, path, body, headers)
    assert got == status
    assert json.loads(payload)["error"]
    if status == 405:
        assert reply_headers["Allow"] == "POST"
    assert server.http("GET", "/health")[0] == 200  # the server goes on
    assert server.stop() == 0


def test_body_over_the_limit_is_413_before_it_is_read(start_server):
    server = start_server("--max-body-bytes", 10_000)
    with socket.create_connection((server.host, server.http_port)) as sock:
        # Announce a big body but send only the headers: the answer must come anyway.
        sock.sendall(b"POST /v1/ingest/t HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")
    # Chunked and gzip bodies are measured as they stream in (gzip after inflating).
    assert server.ingest("t", b'{"pad":"' + b"x" * 100_000 + b'"}\n', gzipped=True)[0] == 413
    conn = http.client.HTTPConnection(server.host, server.http_port)
    conn.request("POST", "/v1/ingest/t", body=iter([b"{}\n" * 5000] * 3), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 413
    assert server.http("GET", "/health")[0] == 200
    assert server.stop() == 0


def test_every_answer_is_counted_by_route_and_refusals_are_logged(start_server):
    server = start_server("--max-body-bytes", 10_000, "--max-buffer-bytes", 3000, *NEVER)
    ndjson_type = {"Content-Type": "application/x-ndjson"}
    assert server.http("GET", "/nowhere/1")[0] == 404
    assert server.http("GET", "/nowhere/2")[0] == 404
    assert server.http("GET", "/v1/ingest/t")[0] == 405
    assert server.http("POST", "/v1/ingest/t", b"a,b\n", {"Content-Type": "text/csv"})[0] == 415
    assert server.http("POST", "/v1/ingest/1bad", b"{}\n", ndjson_type)[0] == 400
    with socket.create_connection((server.host, server.http_port)) as sock:
        sock.sendall(b"POST /v1/ingest/t HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")
    # a body that fits fills the budget: then the next one is refused with 429
    poll(lambda: server.http("POST", "/v1/ingest/t", b'{"pad":"' + b"x" * 2000 + b'"}\n', ndjson_type)[0] == 429,
         what="a 429")
    for _ in range(20):
        assert server.http("GET", "/nowhere")[0] == 404
    counted = {(dict(labels)["route"], dict(labels)["status"]): value
               for (name, labels), value in server.metrics().items() if name == "ingest_http_requests_total"}
    assert counted[("other", "404")] == 22  # the raw paths are never labels
    assert counted[("/v1/ingest/{table}", "405")] == 1
    assert counted[("/v1/ingest/{table}", "415")] == 1
    assert counted[("/v1/ingest/{table}", "400")] == 1
    assert counted[("/v1/ingest/{table}", "413")] == 1
    assert counted[("/v1/ingest/{table}", "429")] >= 1
    assert {route for route, _ in counted} <= {"other", "/v1/ingest/{table}", "/metrics"}
    log = server.log()
    for status, reason in (("404 other", "no such endpoint"), ("405 /v1/ingest/{table}", "use POST"),
                           ("415 /v1/ingest/{table}", "unsupported Content-Type"),
                           ("400 /v1/ingest/{table}", "invalid table name"),
                           ("413 /v1/ingest/{table}", "body exceeds the limit"),
                           ("429 /v1/ingest/{table}", "memory budget")):
        assert re.search(rf"WARNING ingest.http: refused {re.escape(status)} from 127\.0\.0\.1:\d+: .*{reason}", log), status
    assert log.count("refused 404 other") < 22  # rate-limited
    assert server.stop() == 0


def read_head(sock: socket.socket) -> bytes:
    """Reads until the end of one response head (what curl waits for after Expect: 100-continue)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed after {data!r}"
        data += chunk
    return data


def test_expect_100_continue_is_answered_so_large_uploads_do_not_stall(start_server):
    server = start_server()
    body = ndjson(12_000)  # over 1 MB: curl sends Expect: 100-continue and waits up to a second for it
    assert len(body) > 1 << 20
    with socket.create_connection((server.host, server.http_port)) as sock:
        sock.sendall(b"POST /v1/ingest/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                     b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = read_head(sock)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any byte of the body was sent
        sock.sendall(body)
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
    server.wait_landed("uploads", 12_000)
    assert server.stop() == 0
