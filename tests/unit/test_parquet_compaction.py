"""compact_table over a ParquetSink's real files: ledger ids kept, a replay
of a compacted batch skipped, a compaction stopped between its rename and
its unlinks rolled forward."""
import shutil

import pyarrow as pa
import pytest

from ingest.core.batch import BatchId
from ingest.sinks.parquet import ParquetSink, compact_table, query_directory
from ingest.sinks.partitioning import parse_partition_by


def batch(first, count, a):
    return pa.RecordBatch.from_pydict({"id": list(range(first, first + count)), "a": [a] * count,
                                       "ts": ["2026-12-07T00:00:00Z"] * count})


def write_batches(sink, n=4):
    for lsn in range(1, n + 1):
        assert sink.write("t", batch(lsn * 10, 3, lsn if lsn % 2 else lsn + 0.5), BatchId(lsn, lsn))


def counts(root):
    return query_directory(root, "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(a) AS a FROM t").to_pylist()


@pytest.mark.parametrize("partition_by", ["", "date(ts)"])
def test_compaction_keeps_rows_and_ledger_ids_and_a_replay_is_skipped(tmp_path, partition_by):
    root = tmp_path / "parquet"
    write_batches(ParquetSink(root, parse_partition_by(partition_by)))
    before = counts(root)
    summary = compact_table(root, "t")
    assert summary == {"tables": 1, "partitions": 1, "files_before": 4, "files_after": 1, "rows": 12}
    assert counts(root) == before == [{"n": 12, "ids": 12, "a": 3 * (1 + 2.5 + 3 + 4.5)}]
    sink = ParquetSink(root, parse_partition_by(partition_by))  # a restart
    assert sink.ledger().complete == {"t": {(1, 1), (2, 2), (3, 3), (4, 4)}}
    assert not sink.write("t", batch(10, 3, 1), BatchId(1, 1))  # a replay of a compacted batch
    assert counts(root) == before


def test_a_compaction_stopped_between_rename_and_unlink_rolls_forward(tmp_path):
    root = tmp_path / "parquet"
    write_batches(ParquetSink(root))
    saved = tmp_path / "inputs"
    shutil.copytree(root / "t", saved)
    compact_table(root, "t")
    for path in saved.glob("batch-*.parquet"):  # the inputs back beside the merged file
        shutil.copy(path, root / "t" / path.name)
    assert counts(root)[0]["n"] == 24  # what a reader can see in that window
    ParquetSink(root)  # a sink's start rolls forward
    assert sorted(p.name.split("-")[0] for p in (root / "t").glob("*.parquet")) == ["compacted"]
    assert counts(root)[0] == {"n": 12, "ids": 12, "a": 33.0}
    for path in saved.glob("batch-*.parquet"):
        shutil.copy(path, root / "t" / path.name)
    assert compact_table(root, "t")["files_before"] == 1  # so does the next compaction
    assert counts(root)[0]["n"] == 12
