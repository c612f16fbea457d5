"""Both sinks end to end: types, schema evolution, queries while running."""
import json
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import poll

from ingest.testing.corpus import ndjson


@pytest.mark.parametrize("sink", ["duckdb", "parquet"])
def test_schema_evolution_adds_and_widens_columns(start_server, sink):
    server = start_server("--sink", sink, "--batch-events", 2, "--flush-interval", 600_000)
    assert server.ingest("evo", b'{"a":1,"b":"x"}\n{"a":2,"b":"y"}\n')[0] == 200
    server.wait_landed("evo", 2)
    assert server.ingest("evo", b'{"a":2.5,"c":true}\n{"a":3,"d":{"k":[1]}}\n')[0] == 200
    server.wait_landed("evo", 4)
    rows = server.query("SELECT a, b, c, d FROM evo ORDER BY a").to_pylist()
    assert rows == [
        {"a": 1.0, "b": "x", "c": None, "d": None},
        {"a": 2.0, "b": "y", "c": None, "d": None},
        {"a": 2.5, "b": None, "c": True, "d": None},
        {"a": 3.0, "b": None, "c": None, "d": '{"k":[1]}'},
    ]
    # a type conflict is a rejected line, not a failed batch
    status, reply = server.ingest("evo", b'{"a":"text"}\n{"a":4}\n')
    server.wait_landed("evo", 5)
    counters = server.stats("evo")
    assert counters["rejected"] == 1 and counters["landed"] == 5
    assert server.stop() == 0


def test_delta_schema_evolution_adds_columns_and_refuses_what_would_not_fit(start_server):
    """Delta cannot widen a BIGINT column (and delta-rs would store 2.5 as 2
    without a word): that event is dead-lettered with the reason, the rest of
    its batch lands, new columns join the table."""
    server = start_server("--sink", "delta", "--batch-events", 2, "--flush-interval", 600_000)
    assert server.ingest("evo", b'{"a":1,"b":"x"}\n{"a":2,"b":"y"}\n')[0] == 200
    server.wait_landed("evo", 2)
    status, _, body = server.http("POST", "/v1/ingest/evo?wait=flushed", b'{"a":2.5,"c":true}\n{"a":3,"d":{"k":[1]}}\n')
    reply = json.loads(body)
    assert status == 422 and reply["landed"] == 1 and reply["dead_lettered"] == 1
    assert "column 'a' is int64 in the Delta table" in reply["reasons"][0]
    rows = server.query("SELECT a, b, d FROM evo ORDER BY a").to_pylist()
    assert rows == [{"a": 1, "b": "x", "d": None}, {"a": 2, "b": "y", "d": None}, {"a": 3, "b": None, "d": '{"k":[1]}'}]
    assert server.stop() == 0
    from ingest.core.deadletter import DeadLetterStore

    store = DeadLetterStore(server.data_dir / "deadletter")
    kept = [row for e in store.entries("evo") for row in store.read(e.path).to_pylist()]
    assert [(row["a"], row["c"]) for row in kept] == [(2.5, True)]


def test_parquet_files_are_zstd_and_readable_while_the_server_runs(start_server):
    server = start_server("--sink", "parquet", "--batch-events", 100)
    server.send_tcp(ndjson(1000))
    server.wait_landed("events", 1000)
    files = sorted(f for f in (server.data_dir / "parquet" / "events").iterdir() if f.name != "_common_metadata")
    assert files and all(f.suffix == ".parquet" and not f.name.startswith(".") for f in files)
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    con = duckdb.connect()
    pattern = str(server.data_dir / "parquet" / "events" / "*.parquet")
    assert con.execute(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchone() == (1000,)
    assert server.stop() == 0


@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_ingest_query_cli_while_the_server_runs(start_server, sink):
    server = start_server("--sink", sink, "--batch-events", 10)
    server.send_tcp(ndjson(100))
    server.wait_landed("events", 100)
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "query", "--data-dir", str(server.data_dir), "--format", "json",
         "SELECT count(*) AS n, max(id) AS top FROM events"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"n": 100, "top": 99}
    # the server keeps ingesting after the query
    server.send_tcp(ndjson(10, start=100))
    server.wait_landed("events", 110)
    bad = subprocess.run(
        [sys.executable, "-m", "ingest", "query", "--data-dir", str(server.data_dir), "SELECT * FROM missing_table"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 1 and "missing_table" in bad.stderr
    assert server.stop() == 0


def test_a_poison_row_is_isolated_by_bisection_and_dead_lettered(start_server, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with duckdb.connect(str(data_dir / "ingest.duckdb")) as con:
        con.execute("CREATE TABLE guarded (a INTEGER CHECK (a < 10))")  # a declared column type and a constraint
    server = start_server("--batch-events", 8, "--flush-interval", 600_000)
    body = b"".join(b'{"a":%d}\n' % a for a in (1, 2, 99, 4, 5, 6, 3000000000, 8))
    assert server.ingest("guarded", body)[1]["accepted"] == 8
    counters = poll(lambda: (c := server.stats("guarded"))["buffered"] == 0 and c, what="the batch to be settled")
    assert counters["landed"] == 6 and counters["dead_lettered"] == 2
    assert server.stop() == 0
    from ingest.core.deadletter import DeadLetterStore

    store = DeadLetterStore(data_dir / "deadletter")
    entries = store.entries("guarded")
    assert {e.kind for e in entries} == {"failed"} and {e.reason for e in entries} == {"refused by the sink"}
    kept = sorted(v for e in entries for v in store.read(e.path).column("a").to_pylist())
    assert kept == [99, 3000000000]
    assert any("Constraint" in e.error for e in entries) and any("Conversion" in e.error or "out of range" in e.error.lower() for e in entries)
    with duckdb.connect(str(data_dir / "ingest.duckdb"), read_only=True) as con:
        assert con.execute("SELECT a FROM guarded ORDER BY a").fetchall() == [(1,), (2,), (4,), (5,), (6,), (8,)]


DECLARED = """
[tables.orders]
strict = false
[tables.orders.columns]
id = "int64"
placed = "timestamp[ms]"
day = "date"
items = "list<struct<sku: string, qty: int64>>"
address = "struct<city: string, zip: string>"
payload = "json"
"""


@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_declared_schema_lands_typed_columns(start_server, tmp_path, sink):
    config = tmp_path / "ingest.toml"
    config.write_text(DECLARED)
    server = start_server("--sink", sink, "--config", config, "--flush-interval", 20)
    body = (b'{"id":1,"placed":1700000000123,"day":"2024-05-01","items":[{"sku":"a","qty":2}],'
            b'"address":{"city":"Oslo","zip":"0150"},"payload":{"x":[1,2]},"note":"extra"}\n'
            b'{"id":2,"placed":"2024-05-01T10:00:00+02:00","items":[{"sku":"b","qty":"many"}]}\n'
            b'{"id":3,"day":"May 1st"}\n')
    status, reply = server.ingest("orders", body)
    assert status == 200
    server.wait_landed("orders", 1)
    counters = poll(lambda: (c := server.stats("orders"))["buffered"] == 0 and c, what="the batch to settle")
    assert counters["landed"] == 1 and counters["rejected"] == 2
    row = server.query("SELECT id, epoch_ms(placed) AS placed, day::VARCHAR AS day, items[1].qty AS qty, "
                       "address.city AS city, payload->>'$.x[1]' AS x, note FROM orders").to_pylist()
    assert row == [{"id": 1, "placed": 1700000000123, "day": "2024-05-01", "qty": 2, "city": "Oslo", "x": "2",
                    "note": "extra"}]
    assert server.stop() == 0
    from ingest.core.deadletter import DeadLetterStore

    store = DeadLetterStore(server.data_dir / "deadletter")
    errors = sorted(row["error"] for e in store.entries("orders") for row in store.read(e.path).to_pylist())
    assert errors == ["field 'day': string is not a YYYY-MM-DD date", "field 'items[0].qty': expected int64, got string"]
