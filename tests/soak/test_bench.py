"""`ingest bench --quick` end to end: it runs, prints its table and writes
results.json and plots. Figures are never asserted: a loaded CI machine is
not a benchmark machine."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.bench.goals import GOALS
from ingest.bench.runner import QUICK_CASES

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "bench", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    return result, out


def test_quick_bench_exits_cleanly_and_prints_its_table(quick_run):
    result, _ = quick_run
    assert result.returncode == 0, result.stdout + result.stderr
    for heading in ("case", "events/s", "MB/s", "ack ms p50/p99", "landed ms p50/p99", "CPU s", "peak RSS MB"):
        assert heading in result.stdout
    for case in QUICK_CASES:
        assert f"\n{case} " in result.stdout
    assert "Baselines" in result.stdout and "Goals" in result.stdout


def test_results_json_holds_every_case_baseline_and_the_machine(quick_run):
    _, out = quick_run
    document = json.loads((out / "results.json").read_text())
    cases = document["cases"]
    assert {c["transport"] for c in cases} == {"tcp", "http"}
    for case in cases:
        assert case["error"] is None
        assert case["events_per_second"] > 0 and case["mb_per_second"] > 0
        assert set(case["latency_ms"]["landed"]) == {"p50", "p99"}
        if case["transport"] == "http":
            assert set(case["latency_ms"]["ack"]) == {"p50", "p99"}
        else:
            assert case["latency_ms"]["ack"] is None  # TCP has no acknowledgement
        assert case["server_cpu_seconds"] is not None and case["server_peak_rss_bytes"] > 0
    keys = {figure["key"] for figure in document["baselines"]}
    assert {"pyarrow", "pyarrow-read-json-1t", "duckdb-read-ndjson", "duckdb-row-insert", "duckdb-bulk-insert",
            "encoder-compiled", "encoder-reference", "import-read-ndjson", "import-pyarrow", "import-duckdb"} <= keys
    assert all(figure["events_per_second"] > 0 for figure in document["baselines"])
    assert document["comparisons"] and [goal["goal"] for goal in document["goals"]] == [goal.text for goal in GOALS]
    machine = document["machine"]
    for field in ("cpu_count", "cpu_model", "memory_bytes", "os", "python"):
        assert machine[field]
    versions = document["versions"]
    for package in ("ingest", "pyarrow", "duckdb", "numpy", "uvloop"):
        assert versions[package]
    assert isinstance(versions["cython_compiled"], bool)


def test_plots_are_png_files(quick_run):
    _, out = quick_run
    plots = sorted(out.glob("*.png"))
    assert plots
    for plot in plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC
