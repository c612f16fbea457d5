"""The sink registry: `--sink NAME` -> how to open it and query what it left."""
from __future__ import annotations

from ingest.server.config import Settings
from ingest.sinks.registry import SINKS, open_sink, query_offline


def test_every_registered_sink_opens_lands_and_is_queried_offline(tmp_path):
    import pyarrow as pa

    for name in SINKS:
        settings = Settings(data_dir=tmp_path / name, sink=name)
        settings.data_dir.mkdir()
        sink = open_sink(settings)
        assert sink.name == name
        sink.write("t", pa.record_batch({"n": pa.array([1, 2], pa.int64())}))
        sink.close()
        assert query_offline(settings, "SELECT sum(n) AS total FROM t").to_pylist() == [{"total": 3}]


def test_a_data_directory_with_nothing_landed_answers_sql_and_stays_empty(tmp_path):
    assert query_offline(Settings(data_dir=tmp_path), "SELECT 1 AS x").to_pylist() == [{"x": 1}]
    assert list(tmp_path.iterdir()) == []  # no database file made by a read
