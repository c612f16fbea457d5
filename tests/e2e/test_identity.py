"""Column and table identity: keys and table names that differ only in case,
and keys the sinks cannot hold, reject only the events that carry them."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import poll

from ingest.core.deadletter import DeadLetterStore
from ingest.sinks.parquet import query_directory

GOOD = 200


def corpus() -> tuple[bytes, set[int]]:
    """GOOD events with ids 0.., some spelling a key in another case (which
    lands in the same column), and between them the events the sinks cannot
    hold: both "id" and "ID", or a key with a NUL. Returns the NDJSON and the
    bad events' ids (from GOOD on)."""
    lines, bad = [], set()
    for i in range(GOOD):
        if i % 40 == 7:
            lines.append({"ID": i, "v": f"x{i}"})  # another spelling of id: one column
        elif i % 40 == 21:
            lines.append({"id": i, "V": f"x{i}", "Extra": i})
        else:
            lines.append({"id": i, "v": f"x{i}", **({"extra": i} if i % 3 == 0 else {})})
        if i % 37 == 5:
            bad.add(GOOD + i)
            lines.append({"id": GOOD + i, "ID": GOOD + i})
        if i % 61 == 30:
            bad.add(GOOD + i)
            lines.append({"id": GOOD + i, "k\u0000": 1})
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines), bad


def wait_settled(server, table: str, total: int) -> dict:
    return poll(lambda: (c := server.stats(table)) and c["landed"] + c["dead_lettered"] + c["rejected"] >= total
                and c, what=f"{total} events settled in {table}")


@pytest.mark.parametrize("transport", ["tcp", "http"])
@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_colliding_and_nul_keys_reject_only_their_events(start_server, sink, transport):
    server = start_server("--sink", sink, "--batch-events", 50, "--retry-attempts", 1)
    body, bad = corpus()
    if transport == "tcp":
        server.send_tcp(body)
    else:
        status, reply = server.ingest("events", body)
        assert status == 200 and reply["accepted"] == GOOD + len(bad), reply
    counters = wait_settled(server, "events", GOOD + len(bad))
    assert (counters["landed"], counters["dead_lettered"], counters["retries"]) == (GOOD, len(bad), 0)

    entries = DeadLetterStore(server.data_dir / "deadletter").entries("events")
    assert {e.reason for e in entries} == {"refused by the sink"} and sum(e.rows for e in entries) == len(bad)
    errors = {e.error for e in entries}
    assert any("keys 'id' and 'ID' differ only in case" in e and "an event holds both" in e for e in errors), errors
    assert any("key 'k\\x00' holds a NUL character" in e for e in errors), errors
    store = DeadLetterStore(server.data_dir / "deadletter")
    kept = {row["id"] for e in entries for row in store.read(e.path).to_pylist()}
    assert kept == bad

    rows = server.query("SELECT id, v, extra FROM events ORDER BY id").to_pylist()
    assert [r["id"] for r in rows] == list(range(GOOD))
    assert all(r["v"] == f"x{r['id']}" for r in rows)
    assert [r["id"] for r in rows if r["extra"] is not None] == [
        i for i in range(GOOD) if (i % 3 == 0 and i % 40 != 7) or i % 40 == 21]

    # the table keeps working: later batches add columns, in either case
    later = b"".join(json.dumps({"id": GOOD * 2 + i, "Later": i, "LATER": None}).encode() + b"\n" for i in range(50))
    if transport == "tcp":
        server.send_tcp(later)
    else:
        assert server.ingest("events", later)[0] == 200
    server.wait_landed("events", GOOD + 50)
    assert server.query("SELECT count(*) AS n, sum(later) AS s FROM events").to_pylist() == [
        {"n": GOOD + 50, "s": sum(range(50))}]
    assert server.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    server.assert_accounted()
    assert server.stop() == 0


@pytest.mark.parametrize("sink,first,second", [("duckdb", "CaseTable", "casetable"), ("parquet", "events", "Events")])
def test_table_names_differing_in_case_are_one_table(start_server, tmp_path, sink, first, second):
    server = start_server("--sink", sink, "--batch-events", 10)
    for name, start in ((first, 0), (second, 10), (first.upper(), 20)):
        lines = b"".join(json.dumps({"n": start + i}).encode() + b"\n" for i in range(10))
        assert server.ingest(name, lines)[0] == 200
    server.wait_landed(first, 30)
    assert {t for t in server.stats()["tables"] if t.lower() == first.lower()} == {first}
    assert server.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    assert server.query(f"SELECT count(*) AS c, sum(n) AS s FROM {second}").to_pylist() == [{"c": 30, "s": sum(range(30))}]
    assert server.stop() == 0

    # after a restart the spelling already in the sink wins
    again = start_server("--sink", sink, "--batch-events", 10, data_dir=server.data_dir)
    assert again.ingest(second.upper(), b'{"n": 30}\n')[0] == 200
    again.wait_landed(first, 1)
    assert again.query(f"SELECT count(*) AS c FROM {first}").to_pylist() == [{"c": 31}]
    assert again.stop() == 0
    if sink == "parquet":
        assert [p.name for p in (server.data_dir / "parquet").iterdir() if p.is_dir()] == [first]


def test_query_views_merge_directories_that_differ_only_in_case(tmp_path):
    for name, value in (("events", 1), ("Events", 2), ("EVENTS", 3), ("other", 4)):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"n": [value]}), tmp_path / name / "batch.parquet")
    assert query_directory(tmp_path, "SELECT 1 AS one").to_pylist() == [{"one": 1}]
    assert query_directory(tmp_path, "SELECT sum(n) AS s FROM events").to_pylist() == [{"s": 6}]
    assert query_directory(tmp_path, "SELECT n FROM other").to_pylist() == [{"n": 4}]


@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_sink_refuses_unstorable_keys_as_data_errors_and_keeps_its_columns(tmp_path, sink):
    from ingest.sinks.duckdb import DuckDBSink
    from ingest.sinks.parquet import ParquetSink

    target = DuckDBSink(tmp_path / "x.duckdb") if sink == "duckdb" else ParquetSink(tmp_path / "parquet")
    assert target.write("t", pa.record_batch({"a": [1], "": pa.array([None], pa.int64())}))  # no value: dropped
    for batch in (pa.record_batch({"a": [2], "": [1]}), pa.record_batch({"a": [2], "A": ["x"]}),
                  pa.record_batch({"a": [2], "A": [3]})):
        with pytest.raises(Exception) as refused:
            target.write("t", batch)
        assert target.is_data_error(refused.value) and ("'A'" in str(refused.value) or "''" in str(refused.value))
    if sink == "duckdb":  # a write whose DDL is rolled back leaves the column cache as the catalog is
        with pytest.raises(Exception) as refused:
            target.write("t", pa.record_batch({"a": ["not a number"], "new": [1]}))
        assert target.is_data_error(refused.value)
    assert target.write("T", pa.record_batch({"A": [3, None], "New": [None, 4], "b": [None, 5]}))
    # one column per name, spelled as first landed: the rolled-back "new" left nothing behind
    assert target.query("SELECT * FROM t ORDER BY a NULLS LAST").to_pylist() == [
        {"a": 1, "New": None, "b": None}, {"a": 3, "New": None, "b": None}, {"a": None, "New": 4, "b": 5}]
    target.close()
