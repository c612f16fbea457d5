"""ClickHouse as `ingest bench`'s baseline, against a real clickhouse-server
(skipped where it is not installed: CI does not install it). Small event
counts: this checks what the bench does, never its figures."""
import os
import stat

import pytest

pytest.importorskip("tqdm")  # the runner's progress bar: the extra [bench]
from ingest.bench import clickhouse  # noqa: E402
from ingest.bench.runner import Bench, BenchOptions, Corpus, LoadRun  # noqa: E402

EVENTS = 3_000


def run_bench(**options) -> tuple[Bench, dict]:
    bench = Bench(BenchOptions(events=EVENTS, repeat=1, sink="duckdb", progress=False, **options))
    return bench, bench.run()


@pytest.fixture
def clickhouse_installed():
    if not clickhouse.installed():
        pytest.skip("clickhouse-server not on PATH: the ClickHouse baseline is tested where it is installed")


def test_a_clickhouse_that_cannot_start_is_a_one_line_note(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / clickhouse.SERVER_BINARY
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Exception: no config here' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    _, document = run_bench(cases="http-1000-c16")
    assert [(case["case"], case["sink"], case["error"]) for case in document["cases"]] == [
        ("http-1000-c16", "duckdb", None)]
    assert document["clickhouse"] is None
    assert [note for note in document["notes"] if "clickhouse" in note.lower()] == [
        "clickhouse-server did not start: Exception: no config here: no ClickHouse baseline"]


@pytest.fixture(scope="module")
def running_clickhouse(tmp_path_factory):
    if not clickhouse.installed():
        pytest.skip("clickhouse-server not on PATH: the ClickHouse baseline is tested where it is installed")
    server = clickhouse.ClickHouse.start(tmp_path_factory.mktemp("clickhouse"))
    yield server
    server.stop()
    assert server.process.poll() is not None


def test_the_bench_starts_clickhouse_runs_its_cases_and_stops_it(clickhouse_installed):
    bench, document = run_bench(cases="http-1000-c16,http-10000-c8")
    assert [(c["case"], c["sink"], c["shape"], c["error"], c["landed"]) for c in document["cases"]] == [
        ("http-1000-c16", "duckdb", "nested", None, EVENTS), ("http-10000-c8", "duckdb", "nested", None, EVENTS),
        ("http-1000-c16", "clickhouse-mergetree", "flat", None, EVENTS),
        ("http-10000-c8", "clickhouse-mergetree", "flat", None, EVENTS),
        ("http-1000-c16", "clickhouse-buffer", "flat", None, EVENTS)]
    for case in document["cases"]:
        assert case["http_statuses"] == {"200": case["requests"]}
        assert case["events_per_second"] > 0 and set(case["latency_ms"]["ack"]) == {"p50", "p99"}
    assert document["clickhouse"]["version"].startswith(tuple("0123456789"))
    assert bench.clickhouse.process.poll() is not None  # stopped by its PID
    assert not bench.clickhouse.directory.exists()  # with the bench's temporary directory


def test_clickhouse_receives_every_event_of_the_corpus_once(running_clickhouse, tmp_path):
    options = BenchOptions(events=EVENTS, cases="http-1-c32")
    corpus = Corpus.generate("flat", EVENTS, 7, tmp_path)
    cases = Bench(options).planned_clickhouse_cases()
    assert [case.sink for case in cases] == ["clickhouse-mergetree", "clickhouse-buffer"]
    for case in cases:
        (tmp_path / case.sink).mkdir()
        table = f"test_{case.sink.replace('-', '_')}"
        figures = LoadRun(case, corpus, running_clickhouse, table, tmp_path / case.sink, options).run()
        assert (figures["error"], figures["landed"]) == (None, case.events)
        assert case.connections == 32 and figures["requests"] == case.events  # one event per request
        inserted_into = f"{table}_buffer" if case.sink == "clickhouse-buffer" else table  # a Buffer reads its memory too
        rows = running_clickhouse.query(f"SELECT count(), uniqExact(id), sum(id), min(id), max(id) FROM {inserted_into}")
        n = case.events
        assert rows.split() == [str(n), str(n), str(n * (n - 1) // 2), "0", str(n - 1)]
        running_clickhouse.drop_tables(table)


def test_the_bench_uses_a_running_clickhouse_at_its_url_and_leaves_it_running(running_clickhouse):
    url = f"http://{running_clickhouse.host}:{running_clickhouse.http_port}"
    _, document = run_bench(cases="http-1000-c16", clickhouse=url)
    assert [(c["case"], c["sink"], c["error"]) for c in document["cases"]] == [
        ("http-1000-c16", "duckdb", None), ("http-1000-c16", "clickhouse-mergetree", None),
        ("http-1000-c16", "clickhouse-buffer", None)]
    assert document["clickhouse"]["where"] == url
    assert running_clickhouse.answers_ping()
    assert "bench_" not in running_clickhouse.query("SHOW TABLES")  # its tables dropped after each case


def test_no_clickhouse_skips_it():
    _, document = run_bench(cases="http-1-c1", no_clickhouse=True)
    assert [case["sink"] for case in document["cases"]] == ["duckdb"]
    assert document["clickhouse"] is None and not [n for n in document["notes"] if "ClickHouse" in n]
