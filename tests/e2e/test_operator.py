"""Operator mistakes and damaged state: one line and exit 2, or a server
that starts anyway; internal names are never writable."""
import json
import socket
import subprocess
import sys

import pytest
from test_wal import kill, lines_body

from ingest.core.deadletter import QUARANTINE


def serve(data_dir, *args):
    """`ingest serve` expected to refuse to start."""
    return subprocess.run([sys.executable, "-m", "ingest", "serve", "--data-dir", str(data_dir), "--tcp-port", "0",
                           "--http-port", "0", *map(str, args)], capture_output=True, text=True, timeout=60)


def one_line_error(result) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingest: error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("sink", ["parquet", "duckdb"])
def test_a_second_server_on_a_data_dir_in_use_exits_naming_the_first(start_server, tmp_path, sink):
    data_dir = tmp_path / "data"
    first = start_server("--sink", sink, "--flush-interval", 600_000, "--batch-events", 1_000_000, data_dir=data_dir)
    assert first.ingest("t", lines_body(0, 1000))[0] == 200
    state = (data_dir / "server.json").read_text()
    segments = sorted(p.name for p in (data_dir / "wal").iterdir())
    line = one_line_error(serve(data_dir, "--sink", sink))
    assert f"in use by pid {first.proc.pid}" in line
    # the second one touched nothing of the first one's
    assert (data_dir / "server.json").read_text() == state
    assert sorted(p.name for p in (data_dir / "wal").iterdir()) == segments
    kill(first)
    server = start_server("--sink", sink, "--flush-interval", 20, data_dir=data_dir)
    server.wait_landed("t", 1000)
    assert server.stop() == 0


def test_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "ingest", "serve", "--data-dir", str(tmp_path / "d"),
                                 "--tcp-port", "0", "--http-port", str(port)], capture_output=True, text=True, timeout=60)
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in one_line_error(result)


def test_wal_repair_and_deadletter_purge_refuse_a_data_dir_in_use(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(data_dir=data_dir)
    for command in (["wal", "repair"], ["deadletter", "purge", "--yes"]):
        (data_dir / "deadletter" / "t").mkdir(parents=True, exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "ingest", *command, "--data-dir", str(data_dir)],
                                capture_output=True, text=True, timeout=60)
        if command[0] == "deadletter" and "nothing to purge" in result.stdout:
            assert server.ingest("t", b'{"a":1}\nnot json\n')[0] == 200  # something to purge
            server.wait_received("t", 2)
            result = subprocess.run([sys.executable, "-m", "ingest", *command, "--data-dir", str(data_dir)],
                                    capture_output=True, text=True, timeout=60)
        assert f"in use by pid {server.proc.pid}" in one_line_error(result)
    assert server.stop() == 0


def test_a_corrupt_dead_letter_file_is_quarantined_and_the_server_starts(start_server, tmp_path):
    data_dir = tmp_path / "data"
    bad = data_dir / "deadletter" / "t" / "20260101T000000Z-1-000000.rejected.arrow"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not an Arrow file")
    server = start_server(data_dir=data_dir)
    assert server.ingest("t", lines_body(0, 3))[0] == 200
    assert server.stop() == 0
    assert not bad.exists() and (data_dir / "deadletter" / QUARANTINE / "t" / bad.name).exists()
    assert "is unreadable" in server.log()
    listed = subprocess.run([sys.executable, "-m", "ingest", "deadletter", "list", "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr


@pytest.mark.parametrize("table", ["_ingest_ledger", "__ingest_batch", "_INGEST_LEDGER", "_ingest_anything", "_wal",
                                   QUARANTINE])
def test_internal_names_are_refused_as_tables(start_server, table):
    server = start_server("--flush-interval", 20)
    status, body = server.ingest(table, lines_body(0, 5))
    assert status == 400 and "reserved" in body["error"]
    # the ledger is intact: a new table's events land and can be read back
    status, _, reply = server.http("POST", "/v1/ingest/fresh?wait=flushed", lines_body(0, 5),
                                   {"Content-Type": "application/x-ndjson"})
    assert status == 200 and json.loads(reply)["status"] == "landed"
    assert server.query("SELECT count(*) AS n FROM fresh").to_pylist() == [{"n": 5}]
    assert server.stop() == 0


def test_a_reserved_tcp_table_is_a_config_error(tmp_path):
    result = serve(tmp_path / "d", "--tcp-table", "_ingest_ledger")
    assert result.returncode == 2 and "reserved" in result.stderr
