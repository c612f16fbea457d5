"""--partition-by: reading the keys, deriving a day, naming the directories."""
import datetime

import pyarrow as pa
import pytest

from ingest.server.config import ConfigError, Settings
from ingest.sinks.partitioning import (NULL_PARTITION, PartitionKey, parse_partition_by, partition_path,
                                       split_partitions, with_partition_columns)


def test_keys_are_columns_or_the_day_of_one():
    assert parse_partition_by("date(ts), country") == (PartitionKey("ts", "date"), PartitionKey("country"))
    assert parse_partition_by("") == ()
    for bad in ("date(ts", "a=b", "month(ts)", "date(ts),ts_date"):
        with pytest.raises(ValueError, match="partition_by"):
            parse_partition_by(bad)


def test_partitioning_needs_a_sink_with_directories():
    with pytest.raises(ConfigError, match="partition_by takes effect with --sink delta or parquet"):
        Settings(sink="duckdb", partition_by="date(ts)").validate()
    with pytest.raises(ConfigError, match="cannot read"):
        Settings(sink="delta", partition_by="date(").validate()


def test_the_day_comes_from_strings_timestamps_and_unix_times():
    day = datetime.date(2026, 12, 7)
    values = {
        "iso": pa.array(["2026-12-07T23:59:59Z", "2026-12-07", "not a date", None]),
        "seconds": pa.array([1796687999, 1796601600, None, None], pa.int64()),
        "millis": pa.array([1796687999000, 1796601600000.0, None, None], pa.float64()),
        "stamp": pa.array([datetime.datetime(2026, 12, 7, 12), None, None, None], pa.timestamp("us", "UTC")),
    }
    for name, column in values.items():
        keys = parse_partition_by(f"date({name})")
        derived = with_partition_columns(pa.record_batch({name: column}), keys).column(f"{name}_date").to_pylist()
        assert derived[0] == day, name
    assert with_partition_columns(pa.record_batch({"iso": values["iso"]}), parse_partition_by("date(iso)")) \
        .column("iso_date").to_pylist()[2:] == [None, None]


def test_a_missing_field_is_the_null_partition_and_paths_are_escaped():
    batch = with_partition_columns(pa.record_batch({"v": [1, 2]}), parse_partition_by("date(ts),region"))
    assert batch.column("ts_date").null_count == 2 and batch.column("region").null_count == 2
    assert partition_path(["ts_date", "region"], (None, "eu/west")) == f"ts_date={NULL_PARTITION}/region=eu%2Fwest"


def test_split_groups_rows_and_drops_the_partition_columns():
    batch = pa.record_batch({"v": [1, 2, 3], "k": ["b", "a", "b"]})
    parts = split_partitions(batch, ["k"])
    assert [(values, part.column("v").to_pylist(), part.schema.names) for values, part in parts] == [
        (("a",), [2], ["v"]), (("b",), [1, 3], ["v"])]
