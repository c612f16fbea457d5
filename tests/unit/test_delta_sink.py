"""The Delta sink in process, on real Delta tables in a temporary
directory: the node's watermark is its ledger, replays are recognised,
values that do not fit are refused, nodes keep their own ids."""
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ingest.core.batch import BatchId
from ingest.durability.node import NodeIdMismatch, node_id
from ingest.sinks.delta import DeltaSink
from ingest.sinks.identity import ColumnRefused
from ingest.sinks.partitioning import parse_partition_by


def sink(tmp_path, node="n1", **options):
    return DeltaSink((tmp_path / "lake").as_uri(), node, tmp_path / node, **options)


def rows(tmp_path, table="t"):
    return DeltaTable((tmp_path / "lake" / table).as_uri()).to_pyarrow_table()


def batch(ids, **columns):
    return pa.record_batch({"id": pa.array(ids, pa.int64()), **columns})


def test_a_replayed_batch_is_recognised_by_the_watermark_even_by_a_new_sink(tmp_path):
    first = sink(tmp_path)
    assert first.write("t", batch([1, 2]), BatchId(1, 3)) is True
    assert first.write("t", batch([3]), BatchId(4, 4)) is True
    assert first.write("t", batch([1, 2]), BatchId(1, 3)) is False
    reopened = sink(tmp_path)  # after a restart
    ledger = reopened.ledger()
    assert ledger.complete == {"t": {(1, 4)}} and ledger.partial == {}
    assert reopened.write("t", batch([3]), BatchId(4, 4)) is False
    assert sorted(rows(tmp_path).column("id").to_pylist()) == [1, 2, 3]


def test_bisected_slices_are_a_partial_batch_until_it_is_settled(tmp_path):
    delta = sink(tmp_path)
    delta.write("t", batch([0]), BatchId(1, 4))
    whole = BatchId(5, 9)
    assert delta.write("t", batch([1, 2]), whole.slice(0, 2)) is True
    ledger = sink(tmp_path).ledger()
    assert ledger.complete == {"t": {(1, 4)}} and ledger.partial == {"t": {(5, 9)}}
    assert delta.write("t", batch([1, 2]), whole.slice(0, 2)) is False  # the rebuilt batch's landed slice
    assert delta.write("t", batch([4]), whole.slice(3, 1)) is True  # row 2 was dead-lettered
    delta.mark_settled("t", whole)
    assert sink(tmp_path).ledger().complete == {"t": {(1, 9)}}
    assert sorted(rows(tmp_path).column("id").to_pylist()) == [0, 1, 2, 4]


def test_each_node_has_its_own_watermark_in_one_table(tmp_path):
    one, two = sink(tmp_path, "n1"), sink(tmp_path, "n2")
    assert one.write("t", batch([1]), BatchId(1, 1)) and two.write("t", batch([2]), BatchId(1, 1))
    assert one.write("t", batch([3]), BatchId(2, 2)) and two.write("t", batch([4]), BatchId(2, 2))
    assert sorted(rows(tmp_path).column("id").to_pylist()) == [1, 2, 3, 4]
    assert sink(tmp_path, "n1").ledger().complete == {"t": {(1, 2)}}
    table = DeltaTable((tmp_path / "lake" / "t").as_uri())
    assert table.transaction_version("n1") == table.transaction_version("n2") == (2 << 24) | (1 << 24) - 1


def test_a_value_the_column_cannot_hold_is_refused_not_truncated(tmp_path):
    delta = sink(tmp_path)
    delta.write("t", batch([1], a=pa.array([5], pa.int64())), BatchId(1, 1))
    with pytest.raises(ColumnRefused, match="column 'a' is int64 in the Delta table") as refused:
        delta.write("t", batch([2], a=pa.array([5.5])), BatchId(2, 2))
    assert delta.is_data_error(refused.value) and not delta.is_environment_error(refused.value)
    assert delta.write("t", batch([3], a=pa.array([6.0]), b=pa.array(["new"])), BatchId(3, 3)) is True
    landed = rows(tmp_path).sort_by("id")
    assert landed.column("a").to_pylist() == [5, 6] and landed.column("b").to_pylist() == [None, "new"]


def test_partitioned_tables_write_hive_directories(tmp_path):
    delta = sink(tmp_path, partition_keys=parse_partition_by("date(ts)"))
    delta.write("t", batch([1, 2, 3], ts=pa.array(["2026-12-07T10:00:00Z", "2026-12-08T00:00:00Z", None])),
                BatchId(1, 1))
    table = DeltaTable((tmp_path / "lake" / "t").as_uri())
    assert table.metadata().partition_columns == ["ts_date"]
    directories = sorted(p.name for p in (tmp_path / "lake" / "t").iterdir() if p.name.startswith("ts_date="))
    assert directories == ["ts_date=2026-12-07", "ts_date=2026-12-08", "ts_date=__HIVE_DEFAULT_PARTITION__"]
    assert sorted(rows(tmp_path).column("id").to_pylist()) == [1, 2, 3]


def test_queries_see_every_table_under_the_root(tmp_path):
    delta = sink(tmp_path)
    delta.write("Clicks", batch([1, 2]), BatchId(1, 1))
    delta.write("views", batch([3]), BatchId(2, 2))
    assert delta.query("SELECT (SELECT count(*) FROM clicks) AS c, (SELECT count(*) FROM views) AS v").to_pylist() \
        == [{"c": 2, "v": 1}]


def test_the_node_id_is_made_once_and_kept(tmp_path):
    made = node_id(tmp_path / "d")
    assert node_id(tmp_path / "d") == made == (tmp_path / "d" / "node-id").read_text().strip()
    assert node_id(tmp_path / "e", "east-1") == "east-1" == node_id(tmp_path / "e")
    with pytest.raises(NodeIdMismatch, match="belongs to node 'east-1'"):
        node_id(tmp_path / "e", "west-1")


def test_batches_too_large_to_record_are_refused_at_start():
    from ingest.server.config import ConfigError, Settings

    Settings(sink="delta", batch_events=(1 << 24) - 1).validate()
    with pytest.raises(ConfigError, match="batch_events must be under 16777216 with --sink delta"):
        Settings(sink="delta", batch_events=1 << 24).validate()
