"""The Parquet sink's files as other tools read them: the reads the README
documents after a widening and a new column, --partition-by, the ledger
across kill -9, and compaction while the server writes."""
import datetime
import json
import threading

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import poll
from test_wal import kill

from ingest.sinks.parquet import compact_table

DAY1, DAY2 = "2026-12-07T10:00:00Z", "2026-12-08T10:00:00Z"


def events(first, count, day=DAY1, **extra):
    return b"".join(json.dumps({"id": n, "ts": day, **extra}).encode() + b"\n" for n in range(first, first + count))


def ingest_flushed(server, table, body):
    status, _, reply = server.http("POST", f"/v1/ingest/{table}?wait=flushed", body,
                                   {"Content-Type": "application/x-ndjson"})
    assert status == 200, reply
    assert json.loads(reply)["status"] == "landed"


# The three reads README.md's "Reading the Parquet files" gives, word for word but for DIR.
def read_duckdb(table_dir):
    return duckdb.sql(f"SELECT * FROM read_parquet('{table_dir}/**/*.parquet', union_by_name=true, "
                      f"hive_partitioning=true)").arrow().read_all()


def read_pyarrow(table_dir):
    return ds.dataset(table_dir, schema=pq.read_schema(f"{table_dir}/_common_metadata"), format="parquet",
                      partitioning="hive").to_table()


def read_polars(table_dir):
    return pl.scan_parquet(f"{table_dir}/**/*.parquet",
                           schema=pl.Schema(pq.read_schema(f"{table_dir}/_common_metadata")),
                           hive_partitioning=True, missing_columns="insert",
                           cast_options=pl.ScanCastOptions(integer_cast="allow-float")).collect().to_arrow()


def rows(table, columns):
    return sorted(({c: r[c] for c in columns} for r in table.to_pylist()), key=lambda r: r["id"])


@pytest.mark.parametrize("partition_by", ["", "date(ts)"])
@pytest.mark.parametrize("read", [read_duckdb, read_pyarrow, read_polars], ids=["duckdb", "pyarrow", "polars"])
def test_each_documented_read_sees_a_widened_and_a_new_column(start_server, partition_by, read):
    server = start_server("--sink", "parquet", "--partition-by", partition_by)
    ingest_flushed(server, "t", events(0, 2, a=1))
    ingest_flushed(server, "t", events(2, 1, DAY2, a=5.5, new="x"))
    ingest_flushed(server, "t", events(3, 1, a=7))  # an integer after the widening
    table_dir = server.data_dir / "parquet" / "t"
    got = rows(read(table_dir), ["id", "a", "new"])
    assert got == [{"id": 0, "a": 1.0, "new": None}, {"id": 1, "a": 1.0, "new": None},
                   {"id": 2, "a": 5.5, "new": "x"}, {"id": 3, "a": 7.0, "new": None}]
    if partition_by:
        days = {r["id"]: r["ts_date"] for r in read(table_dir).to_pylist()}
        assert days == {0: datetime.date(2026, 12, 7), 1: datetime.date(2026, 12, 7),
                        2: datetime.date(2026, 12, 8), 3: datetime.date(2026, 12, 7)}
    assert server.stop() == 0


def test_partitioned_batches_land_in_hive_directories_and_query_through_the_server(start_server):
    server = start_server("--sink", "parquet", "--partition-by", "date(ts)")
    ingest_flushed(server, "t", events(0, 3) + events(3, 2, DAY2) + b'{"id": 5}\n')
    table_dir = server.data_dir / "parquet" / "t"
    directories = sorted(p.name for p in table_dir.iterdir() if p.is_dir())
    assert directories == ["ts_date=2026-12-07", "ts_date=2026-12-08", "ts_date=__HIVE_DEFAULT_PARTITION__"]
    for directory in directories:
        files = list((table_dir / directory).glob("batch-*.parquet"))
        assert len(files) == 1 and "ts_date" not in pq.read_schema(files[0]).names  # the path holds it
    assert len(list(table_dir.glob(".batch-*.landed"))) == 1
    sql = "SELECT ts_date, count(*) AS n FROM t GROUP BY ts_date ORDER BY ts_date NULLS LAST"
    expected = [{"ts_date": datetime.date(2026, 12, 7), "n": 3}, {"ts_date": datetime.date(2026, 12, 8), "n": 2},
                {"ts_date": None, "n": 1}]
    assert server.query(sql).to_pylist() == expected
    assert server.stop() == 0
    assert server.query_after_stop(sql) == expected  # what `ingest query` runs


def test_a_partitioned_batch_without_its_landed_marker_is_replayed_once_after_kill_9(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server("--sink", "parquet", "--partition-by", "date(ts)", data_dir=data_dir)
    ingest_flushed(server, "t", events(0, 4) + events(4, 4, DAY2))
    ingest_flushed(server, "t", events(8, 4, DAY2))
    kill(server)
    table_dir = data_dir / "parquet" / "t"
    markers = sorted(table_dir.glob(".batch-*.landed"))
    assert len(markers) == 2
    markers[-1].unlink()  # as if killed after its partition files were renamed, before its marker
    server = start_server("--sink", "parquet", "--partition-by", "date(ts)", data_dir=data_dir)
    server.wait_landed("t", 4)  # the replayed batch
    ingest_flushed(server, "t", events(12, 2))
    sql = "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM t"
    assert server.query(sql).to_pylist() == [{"n": 14, "ids": 14}]
    assert server.stop() == 0
    server = start_server("--sink", "parquet", "--partition-by", "date(ts)", data_dir=data_dir)
    assert server.query(sql).to_pylist() == [{"n": 14, "ids": 14}]
    assert server.stats("t").get("landed", 0) == 0  # nothing replayed after a clean stop
    assert server.stop() == 0


@pytest.mark.parametrize("partition_by", ["", "date(ts)"])
def test_a_compacted_batch_is_not_replayed_after_kill_9(start_server, tmp_path, partition_by):
    data_dir = tmp_path / "data"
    server = start_server("--sink", "parquet", "--partition-by", partition_by, data_dir=data_dir)
    for first in range(0, 20, 4):
        ingest_flushed(server, "t", events(first, 2) + events(first + 2, 2, DAY2, a=first + 0.5))
    kill(server)  # the log still holds every record
    summary = compact_table(data_dir / "parquet", "t")
    partitions = 2 if partition_by else 1
    assert summary == {"tables": 1, "partitions": partitions, "files_before": 5 * partitions,
                       "files_after": partitions, "rows": 20}
    server = start_server("--sink", "parquet", "--partition-by", partition_by, data_dir=data_dir)
    ingest_flushed(server, "t", events(20, 2))
    assert server.stats("t")["landed"] == 2  # no replay
    sql = "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(a) AS a FROM t"
    assert server.query(sql).to_pylist() == [{"n": 22, "ids": 22, "a": sum(f * 2 + 1.0 for f in range(0, 20, 4))}]
    assert server.stop() == 0


def test_compaction_while_the_server_writes_keeps_every_row_once(start_server):
    server = start_server("--sink", "parquet", "--partition-by", "date(ts)", "--batch-events", 10)
    requests, per_request = 60, 10
    done = threading.Event()

    def client():
        try:
            for n in range(requests):
                day = DAY1 if n % 2 else DAY2
                ingest_flushed(server, "t", events(n * per_request, per_request, day))
        finally:
            done.set()

    thread = threading.Thread(target=client)
    thread.start()
    root = server.data_dir / "parquet"
    compactions = 0
    poll(lambda: (root / "t" / "_common_metadata").exists(), what="the table's first file")
    while not done.is_set() or compactions == 0:
        compact_table(root, "t")
        compactions += 1
    thread.join()
    summary = compact_table(root, "t")
    assert summary["rows"] == requests * per_request and summary["files_after"] == 2
    sql = "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM t"
    assert server.query(sql).to_pylist() == [{"n": requests * per_request, "ids": requests * per_request}]
    assert rows(read_pyarrow(root / "t"), ["id"]) == [{"id": n} for n in range(requests * per_request)]
    assert server.stop() == 0


def test_the_readme_reads_run_as_pasted(start_server):
    """The code blocks of README.md's "Reading the Parquet files", DIR replaced."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Reading the Parquet files", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = dict((kind, code) for kind, code in re.findall(r"```(sql|python)\n(.*?)```", section, re.S))
    server = start_server("--sink", "parquet", "--partition-by", "date(ts)")
    ingest_flushed(server, "events", events(0, 1, a=1))
    ingest_flushed(server, "events", events(1, 1, DAY2, a=5.5, new="x"))
    data_dir = str(server.data_dir)
    sql = blocks["sql"].replace("DIR", data_dir).split("\n", 1)[1]
    expected = [{"id": 0, "a": 1.0, "new": None}, {"id": 1, "a": 5.5, "new": "x"}]
    assert rows(duckdb.sql(sql).arrow().read_all(), ["id", "a", "new"]) == expected
    scope = {}
    exec(blocks["python"].replace("DIR", data_dir), scope)
    assert rows(scope["table"], ["id", "a", "new"]) == expected
    assert rows(scope["frame"].to_arrow(), ["id", "a", "new"]) == expected
    assert server.stop() == 0
