"""Bodies that are not NDJSON on POST /v1/ingest/{table}: Arrow IPC streams
(through the WAL to the sink without a JSON parse, conformed to the table's
declared columns) and curl's default form Content-Type read as NDJSON."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest
from conftest import poll

ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}


def arrow_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)  # several record batches in one stream
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_an_arrow_stream_lands_in_order_with_lines_and_survives_a_crash(start_server, sink, tmp_path):
    data_dir = tmp_path / "data"
    # a long flush interval: the line's batch is sealed by the Arrow body behind it and may land before the kill,
    # the Arrow rows wait in the write-ahead log
    server = start_server("--sink", sink, "--flush-interval", 60_000, data_dir=data_dir)
    rows = pa.table({"n": pa.array([1, 2, 3, 4, 5], pa.int32()), "kind": pa.array(["a", "b", "a", "b", "a"]).dictionary_encode(),
                     "at": pa.array([0, 1, 2, 3, 4], pa.timestamp("ms", tz="UTC")),
                     "tags": pa.array([["x"], [], None, ["y", "z"], ["x"]], pa.large_list(pa.large_string()))})
    status, _, payload = server.http("POST", "/v1/ingest/events", b'{"n":0,"kind":"line"}\n', {"Content-Type": "application/x-ndjson"})
    assert status == 200
    status, _, payload = server.http("POST", "/v1/ingest/events", arrow_body(rows), ARROW)
    assert status == 200 and json.loads(payload)["accepted"] == 5, payload
    server.stop(sig=9)  # acknowledged: in the write-ahead log, not yet in the sink
    server = start_server("--sink", sink, "--flush-interval", 20, data_dir=data_dir)
    # counted in the sink, not by this process's counters: what landed before the kill is not replayed
    def all_in_the_sink():  # the table may not exist yet: a 400 until its first batch lands
        status, _, payload = server.http("POST", "/v1/query", b"SELECT count(*) AS n FROM events")
        return status == 200 and pa.ipc.open_stream(payload).read_all().to_pylist() == [{"n": 6}]
    poll(all_in_the_sink, what="the 6 events to be in the sink")
    landed = server.query("SELECT n, kind, tags FROM events ORDER BY n").to_pylist()
    assert [r["n"] for r in landed] == [0, 1, 2, 3, 4, 5]
    assert [r["kind"] for r in landed] == ["line", "a", "b", "a", "b", "a"]
    assert landed[4]["tags"] == ["y", "z"]
    assert server.stop() == 0


def test_arrow_rows_that_do_not_fit_the_declared_columns_are_refused_and_kept(start_server, tmp_path):
    config = tmp_path / "tables.toml"
    config.write_text('[tables.orders]\nstrict = true\ncolumns = {id = "int64", total = "float64"}\n')
    server = start_server("--config", config, "--flush-interval", 20)
    good = pa.table({"id": pa.array([1, 2], pa.int32()), "total": pa.array([9.5, 3], pa.float32())})
    assert server.http("POST", "/v1/ingest/orders", arrow_body(good), ARROW)[0] == 200
    for bad, column in ((pa.table({"id": ["x", "y"], "total": [1.0, 2.0]}), "'id'"),
                        (pa.table({"id": [3], "total": [1.0], "extra": [1]}), "'extra'"),
                        (pa.table({"id": [4], "blob": pa.array([b"\x00"], pa.binary())}), "'blob'")):
        status, _, payload = server.http("POST", "/v1/ingest/orders", arrow_body(bad), ARROW)
        error = json.loads(payload)["error"]
        assert status == 400 and column in error and "dead-letter" in error, payload
    status, _, payload = server.http("POST", "/v1/ingest/orders", b"not arrow", ARROW)
    assert status == 400 and "Arrow IPC" in json.loads(payload)["error"]
    server.wait_landed("orders", 2)
    assert server.query("SELECT id, total FROM orders ORDER BY id").to_pylist() == [
        {"id": 1, "total": 9.5}, {"id": 2, "total": 3.0}]
    counts = server.assert_accounted()["orders"]
    assert counts["rejected"] == 4  # the rows of the three refused bodies, kept in the dead-letter store
    assert server.stop() == 0
    done = subprocess.run([sys.executable, "-m", "ingest", "deadletter", "list", "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "orders" in done.stdout, done.stderr


def test_curls_default_form_content_type_is_read_as_ndjson(start_server):
    server = start_server("--flush-interval", 20)
    done = subprocess.run(["curl", "-s", "--data-binary", '{"via":"curl"}\n{"via":"curl"}',
                           f"http://127.0.0.1:{server.http_port}/v1/ingest/events?wait=flushed"],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["landed"] == 2, done.stdout
    assert server.stop() == 0
