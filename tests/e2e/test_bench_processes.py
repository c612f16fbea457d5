"""`ingest bench` started from a directory holding another `ingest/` (a source
checkout beside a non-editable install): its server and client processes
still import the `ingest` the bench itself runs, not the one in the directory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.bench.server_process import ServerUnderTest

ROOT = Path(__file__).resolve().parents[2]
DECOY = 'raise RuntimeError("the decoy ingest/ in the current directory was imported")\n'


@pytest.fixture
def decoy_dir(tmp_path):
    """A directory whose ./ingest fails on import, as an uncompiled checkout would."""
    package = tmp_path / "decoy" / "ingest"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(DECOY)
    (package / "__main__.py").write_text(DECOY)
    return package.parent


def test_the_bench_server_starts_from_a_directory_with_another_ingest(decoy_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(decoy_dir)
    server = ServerUnderTest(tmp_path / "data", "duckdb", "events", ["--log-level", "warning"], tmp_path / "server.log")
    try:
        assert server.stats.document()["sink"] == "duckdb"
    finally:
        server.stop()
    assert "decoy" not in (tmp_path / "server.log").read_text()


def test_a_bench_run_from_a_directory_with_another_ingest_runs_every_case(decoy_dir, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    out = tmp_path / "out"
    # -P: as the installed `ingest` script, this process does not import ./ingest either.
    result = subprocess.run(
        [sys.executable, "-P", "-m", "ingest", "bench", "--quick", "--cases", "tcp-1000,http-1000", "--events", "2000",
         "--no-progress", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=decoy_dir, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cases = json.loads((out / "results.json").read_text())["cases"]
    assert [(case["case"], case["error"], case["landed"]) for case in cases] == [
        ("tcp-1000", None, 2000), ("http-1000", None, 2000)]
