"""NDJSON over TCP, end to end through a real server subprocess."""
import json

LONG_WAIT = ["--flush-interval", 600_000]  # only the test decides when a batch seals


def test_lines_split_across_reads_crlf_and_blank_lines(start_server):
    server = start_server(*LONG_WAIT)
    payload = b'{"n":1,"s":"a"}\r\n\r\n{"n":2,"s":"b"}\n   \n{"n":3,"s":"c"}\r\n{"n":4,"s":"d"}'
    with server.tcp_connect() as sock:
        for i in range(len(payload)):  # one byte per send, so lines arrive in pieces
            sock.sendall(payload[i:i + 1])
    server.wait_received("events", 4)  # the last line has no newline: it counts at close
    assert server.stop() == 0
    from ingest.cli import run_query

    rows = run_query(server.data_dir, "SELECT n, s FROM events ORDER BY n").to_pylist()
    assert rows == [{"n": 1, "s": "a"}, {"n": 2, "s": "b"}, {"n": 3, "s": "c"}, {"n": 4, "s": "d"}]


def test_over_long_line_is_rejected_and_the_connection_goes_on(start_server):
    server = start_server("--max-line-bytes", 1000, *LONG_WAIT)
    long_line = json.dumps({"n": 2, "blob": "x" * 5000}).encode()
    with server.tcp_connect() as sock:
        sock.sendall(b'{"n":1}\n' + long_line[:2000])
        sock.sendall(long_line[2000:] + b'\n{"n":3}\n')
        counters = server.wait_received("events", 3)
    assert counters["rejected"] == 1
    assert server.stop() == 0
    from ingest.cli import run_query

    assert run_query(server.data_dir, "SELECT n FROM events ORDER BY n").to_pylist() == [{"n": 1}, {"n": 3}]


def test_invalid_json_is_rejected_with_its_neighbours_landing(start_server):
    server = start_server(*LONG_WAIT)
    server.send_tcp(b'{"n":1}\n{"n":2,,}\n{"n":3}\n\xff{"n":4}\n{"n":5}\n')
    server.wait_received("events", 5)
    assert server.stop() == 0
    from ingest.cli import run_query

    assert run_query(server.data_dir, "SELECT n FROM events ORDER BY n").to_pylist() == [{"n": 1}, {"n": 3}, {"n": 5}]
    from ingest.core.deadletter import DeadLetterStore

    store = DeadLetterStore(server.data_dir / "deadletter")
    kept = [row for entry in store.entries("events") for row in store.read(entry.path).to_pylist()]
    assert [row["line"] for row in kept] == [b'{"n":2,,}', b'\xff{"n":4}']
    assert all(row["error"] for row in kept)
