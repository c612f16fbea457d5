"""The performance goals of issue 3, checked against a run's figures.

Measured by `ingest bench` and reported as met or not; never asserted in
tests (a loaded CI machine is not a benchmark machine). Each goal takes the
best matching case of the run and names it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Goal:
    text: str  # the promise, as the issue puts it
    threshold: float
    unit: str
    measure: Callable[[dict], tuple[float, str] | None]  # results document -> (value, what was measured)


def _best_case(document: dict, matches: Callable[[dict], bool], figure: str = "events_per_second"):
    candidates = [c for c in document["cases"] if not c.get("error") and c.get(figure) and matches(c)]
    if not candidates:
        return None
    best = max(candidates, key=lambda c: c[figure])
    return best[figure], f"{best['case']} → {best['sink']} ({best['shape']})"


def baseline(document: dict, key: str, shape: str | None = None) -> dict | None:
    for figure in document["baselines"]:
        if figure.get("key") == key and figure.get("events_per_second") and (shape is None or figure["shape"] == shape):
            return figure
    return None


def _encoder_over_pyarrow(document: dict):
    ratios = []
    for figure in document["baselines"]:
        if figure.get("key") != "encoder-compiled":
            continue
        pyarrow = baseline(document, "pyarrow-read-json-1t", figure["shape"])
        if pyarrow:
            ratios.append((figure["events_per_second"] / pyarrow["events_per_second"], figure["shape"]))
    if not ratios:
        return None
    ratio, shape = max(ratios)
    return ratio, f"encode only, one thread, {shape} corpus"


GOALS = (
    Goal("encoder ≥ 2× pyarrow.json.read_json, single-threaded", 2.0, "×", _encoder_over_pyarrow),
    Goal("TCP → Parquet ≥ 1,000,000 events/s", 1_000_000, "events/s",
         lambda d: _best_case(d, lambda c: c["transport"] == "tcp" and c["sink"] == "parquet")),
    Goal("into DuckDB ≥ 600,000 events/s", 600_000, "events/s",
         lambda d: _best_case(d, lambda c: c["sink"] == "duckdb")),
    Goal("HTTP, 1,000-event requests ≥ 600,000 events/s", 600_000, "events/s",
         lambda d: _best_case(d, lambda c: c["transport"] == "http" and c["batch"] == 1000)),
    Goal("HTTP, one event per request ≥ 20,000 requests/s", 20_000, "requests/s",
         lambda d: _best_case(d, lambda c: c["transport"] == "http" and c["batch"] == 1, "requests_per_second")),
)


def evaluate(document: dict) -> list[dict]:
    verdicts = []
    for goal in GOALS:
        measured = goal.measure(document)
        value, source = measured if measured else (None, None)
        verdicts.append({
            "goal": goal.text, "threshold": goal.threshold, "unit": goal.unit,
            "measured": None if value is None else round(value, 2), "source": source,
            "met": None if value is None else value >= goal.threshold,
        })
    return verdicts
