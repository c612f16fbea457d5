"""The performance goals of issues 3, 12 and 16, checked against a run's figures.

Measured by `ingest bench` and reported as met or not; never asserted in
tests (a loaded CI machine is not a benchmark machine). Each goal takes the
best matching case of the run (ingest's own: ClickHouse's cases are only
ever the other side of a ratio) and names it; a goal whose cases or baselines
are not in the run is "not measured".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


DURABLE_WAITS = (None, "received", "flushed")  # ack modes that answer once the events are in the synced log or later


@dataclass(frozen=True)
class Goal:
    text: str  # the promise, as the issue puts it
    threshold: float
    unit: str
    measure: Callable[[dict], tuple[float, str] | None]  # results document -> (value, what was measured)
    at_most: bool = False  # met when the value is at most the threshold (a latency), not at least


def _where(case: dict) -> str:
    return f"{case['case']} → {case['sink']} ({case['shape']})"


def _measured_cases(document: dict, matches: Callable[[dict], bool], figure: str = "events_per_second") -> list[dict]:
    return [c for c in document["cases"] if not c.get("error") and c.get(figure) and matches(c)]


def _ingest(case: dict) -> bool:
    return case.get("server", "ingest") == "ingest"


def _best_case(document: dict, matches: Callable[[dict], bool], figure: str = "events_per_second"):
    """ingest's best case of those matching, by `figure`."""
    candidates = _measured_cases(document, lambda c: _ingest(c) and matches(c), figure)
    if not candidates:
        return None
    best = max(candidates, key=lambda c: c[figure])
    return best[figure], _where(best)


def _durable(document: dict, name: str) -> list[dict]:
    """ingest's runs of case `name` with a durable ack (the default)."""
    return _measured_cases(document, lambda c: _ingest(c) and c["case"] == name and c.get("wait") in DURABLE_WAITS)


def clickhouse_pairs(document: dict) -> list[tuple[dict, dict]]:
    """(ingest's case, ClickHouse's same case) for each ClickHouse case measured:
    ingest's run with a durable ack, its best sink, on ClickHouse's corpus shape if it ran on it."""
    pairs = []
    for theirs in _measured_cases(document, lambda c: not _ingest(c)):
        ours = _durable(document, theirs["case"])
        if ours:
            pairs.append((max(ours, key=lambda c: (c["shape"] == theirs["shape"], c["events_per_second"])), theirs))
    return pairs


def _over_clickhouse(name: str, engine: str):
    """ingest's case `name` over ClickHouse's same case into `engine`."""
    def measure(document: dict):
        for ours, theirs in clickhouse_pairs(document):
            if (theirs["case"], theirs["sink"]) == (name, f"clickhouse-{engine}"):
                return ours["events_per_second"] / theirs["events_per_second"], f"{_where(ours)} / {_where(theirs)}"
        return None
    return measure


def _twin(document: dict, case: dict) -> dict | None:
    """The ?wait=none run of a real-client case, same sink and shape."""
    for other in _measured_cases(document, _ingest):
        if other["case"] == f"{case['case']}-none" and (other["sink"], other["shape"]) == (case["sink"], case["shape"]):
            return other
    return None


def _over_wait_none(name: str):
    def measure(document: dict):
        ratios = [(case["events_per_second"] / twin["events_per_second"], f"{_where(case)} / {_where(twin)}")
                  for case in _durable(document, name) if (twin := _twin(document, case))]
        return max(ratios) if ratios else None
    return measure


def _ack_p50_over_wait_none(name: str):
    """How much longer a durable ack takes than ?wait=none's, p50, in ms."""
    def measure(document: dict):
        gaps = [(case["latency_ms"]["ack"]["p50"] - twin["latency_ms"]["ack"]["p50"],
                 f"{_where(case)} − {case['case']}-none")
                for case in _durable(document, name) if (twin := _twin(document, case))]
        return min(gaps) if gaps else None
    return measure


def baseline(document: dict, key: str, shape: str | None = None) -> dict | None:
    for figure in document["baselines"]:
        if figure.get("key") == key and figure.get("events_per_second") and (shape is None or figure["shape"] == shape):
            return figure
    return None


def _over_pyarrow_one_thread(ours: Callable[[dict, str], tuple[float, str] | None]):
    """ours(document, shape) over pyarrow.json.read_json on one thread, same corpus; the best shape."""
    def measure(document: dict):
        ratios = []
        for shape in document["settings"]["shapes"]:
            pyarrow, figure = baseline(document, "pyarrow-read-json-1t", shape), ours(document, shape)
            if pyarrow and figure:
                ratios.append((figure[0] / pyarrow["events_per_second"], f"{figure[1]} / read_json, {shape} corpus"))
        return max(ratios) if ratios else None
    return measure


def _encoder(document: dict, shape: str):
    figure = baseline(document, "encoder-compiled", shape)
    return (figure["events_per_second"], "encode only, one thread") if figure else None


def _tcp_to_parquet(document: dict, shape: str):
    return _best_case(document, lambda c: c["transport"] == "tcp" and c["sink"] == "parquet" and c["shape"] == shape)


def _import_into(sink: str):
    def measure(document: dict):
        figures = [f for f in document["baselines"] if f.get("key") == f"import-{sink}" and f.get("events_per_second")]
        best = max(figures, key=lambda f: f["events_per_second"], default=None)
        return (best["events_per_second"], f"{best['name']}, {best['shape']} corpus") if best else None
    return measure


def _import_over(sink: str, key: str):
    """`ingest import` into `sink` over the baseline `key`, whole commands on the same file; the best shape."""
    def measure(document: dict):
        ratios = []
        for shape in document["settings"]["shapes"]:
            ours, theirs = baseline(document, f"import-{sink}", shape), baseline(document, key, shape)
            if ours and theirs:
                ratios.append((ours["events_per_second"] / theirs["events_per_second"],
                               f"{ours['name']} / {theirs['name']}, {shape} corpus"))
        return max(ratios) if ratios else None
    return measure


GOALS = (
    Goal("HTTP, 1 event/request, 32 connections, default ack ≥ 1.0× ClickHouse Buffer", 1.0, "×",
         _over_clickhouse("http-1-c32", "buffer")),
    Goal("HTTP, 1 event/request, 32 connections, default ack ≥ 0.5× ?wait=none", 0.5, "×",
         _over_wait_none("http-1-c32")),
    Goal("HTTP, 10,000-event requests, 8 connections ≥ 1.5× ClickHouse MergeTree", 1.5, "×",
         _over_clickhouse("http-10000-c8", "mergetree")),
    Goal("HTTP, 1,000-event requests, 16 connections ≥ 10× ClickHouse Buffer", 10.0, "×",
         _over_clickhouse("http-1000-c16", "buffer")),
    Goal("HTTP, one connection, 1 event at a time: ack p50 ≤ ?wait=none's + 2 ms", 2.0, "ms",
         _ack_p50_over_wait_none("http-1-c1"), at_most=True),
    Goal("TCP → Parquet ≥ 1,000,000 events/s", 1_000_000, "events/s",
         lambda d: _best_case(d, lambda c: c["transport"] == "tcp" and c["sink"] == "parquet")),
    Goal("TCP → Parquet ≥ 1.33× pyarrow.json.read_json, one thread", 1.33, "×",
         _over_pyarrow_one_thread(_tcp_to_parquet)),
    Goal("encoder ≥ 2× pyarrow.json.read_json, single-threaded", 2.0, "×", _over_pyarrow_one_thread(_encoder)),
    Goal("into DuckDB ≥ 600,000 events/s", 600_000, "events/s",
         lambda d: _best_case(d, lambda c: c["sink"] == "duckdb")),
    Goal("HTTP, 1,000-event requests ≥ 600,000 events/s", 600_000, "events/s",
         lambda d: _best_case(d, lambda c: c["transport"] == "http" and c["batch"] == 1000)),
    Goal("HTTP, one event per request ≥ 20,000 requests/s", 20_000, "requests/s",
         lambda d: _best_case(d, lambda c: c["transport"] == "http" and c["batch"] == 1, "requests_per_second")),
    Goal("ingest import → Parquet ≥ 1,000,000 events/s (whole command)", 1_000_000, "events/s",
         _import_into("parquet")),
    Goal("ingest import → DuckDB ≥ 1.2× DuckDB read_ndjson (whole commands, same file)", 1.2, "×",
         _import_over("duckdb", "import-read-ndjson")),
)


def evaluate(document: dict) -> list[dict]:
    verdicts = []
    for goal in GOALS:
        measured = goal.measure(document)
        value, source = measured if measured else (None, None)
        verdicts.append({
            "goal": goal.text, "threshold": goal.threshold, "unit": goal.unit,
            "measured": None if value is None else round(value, 2), "source": source,
            "met": None if value is None else value <= goal.threshold if goal.at_most else value >= goal.threshold,
        })
    return verdicts
