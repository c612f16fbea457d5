"""What `ingest bench` plans, names and judges, without running a server: the
real-client cases and their ClickHouse twins, the clients' share of
connections, HTTP responses as the clients frame them, and the goals."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.bench import goals
from ingest.bench.clients import response_bounds
from ingest.cli.bench import BENCH_EPILOG

pytest.importorskip("tqdm")  # the runner's progress bar: the extra [bench]
from ingest.bench.baselines import BASELINES  # noqa: E402
from ingest.bench.runner import CASE_NAMES, CLIENT_CASES, QUICK_CASES, Bench, BenchOptions, LoadRun  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REAL_CLIENT_CASES = ["http-1-c32", "http-1-c32-none", "http-1000-c16", "http-10000-c8", "http-1-c1", "http-1-c1-none"]


def test_the_real_client_cases_are_named_for_their_events_connections_and_ack():
    assert [case.name for case in CLIENT_CASES] == REAL_CLIENT_CASES
    assert list(CASE_NAMES[:len(REAL_CLIENT_CASES)]) == REAL_CLIENT_CASES  # they lead


def test_the_help_lists_every_case_and_baseline_and_the_quick_default():
    words = BENCH_EPILOG.replace(",", " ").split()
    for name in CASE_NAMES + BASELINES:
        assert name in words, name
    quick = BENCH_EPILOG.split("with --quick:")[1].split(".")[0].replace(",", " ").replace(" and ", " ").split()
    assert quick[:len(QUICK_CASES)] == list(QUICK_CASES)


def planned(**options) -> tuple[list, list]:
    bench = Bench(BenchOptions(**options))
    return bench.planned_cases("nested", bench.options.sinks), bench.planned_clickhouse_cases()


def test_a_pattern_selects_the_real_client_cases_first_for_each_sink():
    cases, _ = planned(cases="http-*-c*,http-1000", events=100_000)
    assert [(case.name, case.sink) for case in cases] == (
        [(name, "duckdb") for name in REAL_CLIENT_CASES] + [("http-1000", "duckdb")]
        + [(name, "parquet") for name in REAL_CLIENT_CASES] + [("http-1000", "parquet")])
    by_name = {case.name: case for case in cases}
    assert [(by_name[n].connections, by_name[n].pipeline, by_name[n].wait) for n in REAL_CLIENT_CASES] == [
        (32, 1, None), (32, 1, "none"), (16, 1, None), (8, 1, None), (1, 1, None), (1, 1, "none")]
    assert [by_name[n].events for n in REAL_CLIENT_CASES] == [10_000, 10_000, 100_000, 100_000, 1_000, 1_000]
    assert by_name["http-1000"].pipeline > 1 and not by_name["http-1000"].one_in_flight


def test_http_wait_applies_to_every_case_but_the_none_twins():
    cases, _ = planned(cases="http-1-c32*,http-1", http_wait="flushed", sink="duckdb")
    assert [(case.name, case.wait) for case in cases] == [
        ("http-1-c32", "flushed"), ("http-1-c32-none", "none"), ("http-1", "flushed")]


def test_clickhouse_runs_the_real_client_cases_into_mergetree_and_the_small_ones_into_buffer_too():
    _, clickhouse_cases = planned(cases="http-*", events=100_000)
    assert [(case.name, case.sink) for case in clickhouse_cases] == [
        ("http-1-c32", "clickhouse-mergetree"), ("http-1000-c16", "clickhouse-mergetree"),
        ("http-10000-c8", "clickhouse-mergetree"), ("http-1-c1", "clickhouse-mergetree"),
        ("http-1-c32", "clickhouse-buffer"), ("http-1000-c16", "clickhouse-buffer"), ("http-1-c1", "clickhouse-buffer")]
    assert {case.shape for case in clickhouse_cases} == {"flat"}
    assert {case.wait for case in clickhouse_cases} == {None}
    events = {(case.name, case.sink): case.events for case in clickhouse_cases}
    assert events[("http-1-c32", "clickhouse-mergetree")] == 1_000  # a part per INSERT: capped
    assert events[("http-1-c32", "clickhouse-buffer")] == 10_000
    assert planned(cases="http-*", no_clickhouse=True)[1] == []
    assert planned(cases="tcp-*,http-1000")[1] == []


class FakeServer:
    host, http_port, tcp_port = "127.0.0.1", 1, 2


def test_a_case_s_connections_and_events_are_shared_among_its_client_processes(tmp_path):
    corpus_path = tmp_path / "corpus.ndjson"
    lines = [b'{"id":%d}\n' % i for i in range(1_000)]
    corpus_path.write_bytes(b"".join(lines))

    class Corpus:
        path = corpus_path

        @staticmethod
        def offset(event):
            return sum(map(len, lines[:event]))

    options = BenchOptions(cases="http-1-c32", events=10_000)
    case = next(c for c in Bench(options).planned_cases("nested", ("duckdb",)) if c.name == "http-1-c32")
    specs = LoadRun(case, Corpus, FakeServer, "events", tmp_path, options)._client_specs()
    assert [(spec.connections, spec.pipeline) for spec in specs] == [(8, 1)] * 4
    assert [spec.start for spec in specs] == [Corpus.offset(n) for n in (0, 250, 500, 750)]
    assert specs[-1].end == Corpus.offset(1_000)
    assert {spec.path for spec in specs} == {"/v1/ingest/events"}


def test_clients_import_nothing_beyond_the_standard_library():
    code = ("import sys; import ingest.bench.clients; "
            "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'}))")
    # -S: no site, so no editable-install finder among the modules
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.replace("'", '"')) == ["ingest"]


def test_responses_are_framed_by_content_length_or_chunks():
    ingest = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}'
    clickhouse = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=3\r\n\r\n0\r\n\r\n"
    error = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nCode:\r\n3\r\n 27\r\n0\r\n\r\n"
    stream = bytearray(ingest + clickhouse + error)
    first = response_bounds(stream, 0)
    assert first == (ingest.index(b"\r\n\r\n"), len(ingest))
    second = response_bounds(stream, first[1])
    assert second[1] == len(ingest) + len(clickhouse)
    assert response_bounds(stream, second[1])[1] == len(stream)
    for cut in (len(ingest) - 1, len(ingest) + len(clickhouse) - 2, len(stream) - 3):
        assert response_bounds(bytearray(stream[:cut]), 0 if cut < len(ingest) else
                               len(ingest) if cut < len(ingest) + len(clickhouse) else second[1]) is None


def case(name, sink, events_per_second, shape="nested", wait=None, ack_p50=1.0, server="ingest", batch=1):
    return {"case": name, "sink": sink, "shape": shape, "wait": wait, "server": server, "transport": "http",
            "batch": batch, "events_per_second": events_per_second, "requests_per_second": events_per_second // batch,
            "latency_ms": {"ack": {"p50": ack_p50, "p99": ack_p50 * 3}}, "error": None}


def verdicts(cases, baselines=()):
    document = {"cases": cases, "baselines": list(baselines), "settings": {"shapes": ["nested"]}}
    return {verdict["goal"]: verdict for verdict in goals.evaluate(document)}


def test_goals_are_ratios_within_one_run_and_not_measured_without_their_inputs():
    results = verdicts([
        case("http-1-c32", "duckdb", 6_000), case("http-1-c32-none", "duckdb", 10_000),
        case("http-1-c32", "clickhouse-buffer", 5_000, shape="flat", server="clickhouse"),
        case("http-1-c1", "duckdb", 500, ack_p50=2.9), case("http-1-c1-none", "duckdb", 2_000, ack_p50=0.4),
    ])
    buffer = results["HTTP, 1 event/request, 32 connections, default ack ≥ 1.0× ClickHouse Buffer"]
    assert (buffer["measured"], buffer["met"]) == (1.2, True)
    none = results["HTTP, 1 event/request, 32 connections, default ack ≥ 0.5× ?wait=none"]
    assert (none["measured"], none["met"]) == (0.6, True)
    sequential = results["HTTP, one connection, 1 event at a time: ack p50 ≤ ?wait=none's + 2 ms"]
    assert (sequential["measured"], sequential["met"]) == (2.5, False)  # at most 2 ms more
    for text in ("HTTP, 10,000-event requests, 8 connections ≥ 1.5× ClickHouse MergeTree",
                 "TCP → Parquet ≥ 1.33× pyarrow.json.read_json, one thread"):
        assert (results[text]["measured"], results[text]["met"], results[text]["source"]) == (None, None, None)
    # ClickHouse's cases are only ever the other side of a ratio
    assert results["HTTP, one event per request ≥ 20,000 requests/s"]["source"] == "http-1-c32-none → duckdb (nested)"


def test_a_goal_on_the_default_ack_ignores_runs_that_asked_for_none():
    results = verdicts([case("http-1-c32", "duckdb", 9_000, wait="none"),
                        case("http-1-c32", "clickhouse-buffer", 5_000, shape="flat", server="clickhouse")])
    assert results["HTTP, 1 event/request, 32 connections, default ack ≥ 1.0× ClickHouse Buffer"]["met"] is None


def test_the_import_goals_compare_whole_commands_on_the_same_file():
    figures = [{"key": "import-read-ndjson", "name": "DuckDB read_ndjson", "shape": "nested", "events_per_second": 1_000_000},
               {"key": "import-duckdb", "name": "ingest import → duckdb", "shape": "nested", "events_per_second": 1_300_000},
               {"key": "import-parquet", "name": "ingest import → parquet", "shape": "nested",
                "events_per_second": 900_000}]
    results = verdicts([], figures)
    into_duckdb = results["ingest import → DuckDB ≥ 1.2× DuckDB read_ndjson (whole commands, same file)"]
    assert (into_duckdb["measured"], into_duckdb["met"]) == (1.3, True)
    into_parquet = results["ingest import → Parquet ≥ 1,000,000 events/s (whole command)"]
    assert (into_parquet["measured"], into_parquet["met"]) == (900_000, False)
    assert verdicts([], figures[1:])[into_duckdb["goal"]]["met"] is None  # no read_ndjson in the run: not measured
