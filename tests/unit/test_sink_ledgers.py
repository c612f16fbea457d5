"""Each sink keeps the batch ids of other logs (an import's files) apart
from its write-ahead log's: recovery never mistakes a file's byte offsets
for lsns, and an import finds exactly its own. Real sinks in tmp_path."""
import pyarrow as pa
import pytest

from ingest.core.batch import BatchId
from ingest.sinks.delta.sink import DeltaSink
from ingest.sinks.duckdb.sink import DuckDBSink
from ingest.sinks.parquet.sink import ParquetSink


def open_sink(kind: str, tmp_path):
    if kind == "duckdb":
        return DuckDBSink(tmp_path / "ingest.duckdb")
    if kind == "parquet":
        return ParquetSink(tmp_path / "parquet")
    return DeltaSink((tmp_path / "lake").as_uri(), "node-a", tmp_path / "node")


@pytest.mark.parametrize("kind", ["duckdb", "parquet", "delta"])
def test_the_ledger_of_each_log_holds_only_its_own_batches(tmp_path, kind):
    sink = open_sink(kind, tmp_path)
    rows = pa.RecordBatch.from_pylist([{"id": 1}, {"id": 2}])
    file_log = "import-0123456789ab-1-0"
    assert sink.write("t", rows, BatchId(1, 3))
    assert sink.write("t", rows, BatchId(0, 5000, log=file_log))
    assert not sink.write("t", rows, BatchId(0, 5000, log=file_log))  # landed already: skipped
    assert sink.write("t", rows, BatchId(5000, 9000, log=file_log))
    wal = sink.ledger()
    assert {r for ranges in wal.complete.values() for r in ranges} <= {(1, 3)} and any(wal.complete.values())
    ends = {last for ranges in sink.ledger(file_log).complete.values() for _, last in ranges}
    assert max(ends) == 9000 and not any(sink.ledger("import-other-1-0").complete.values())
    sink.close()
