"""Runs the encoder's fuzz target (tests/hotpath/fuzz_encoder.py) for a bounded time:
INGEST_FUZZ_SECONDS (default 60; 0 skips it). Any crash, failed invariant,
difference from the reference or input slower than 10 s fails the test, and
the failing input is printed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="the fuzz test needs atheris (test extras)")

FUZZER = Path(__file__).parent.parent / "hotpath" / "fuzz_encoder.py"
SECONDS = int(os.environ.get("INGEST_FUZZ_SECONDS", "60"))
INPUT_TIMEOUT = 10  # seconds for one input before libFuzzer calls it a hang


@pytest.mark.skipif(SECONDS <= 0, reason="INGEST_FUZZ_SECONDS=0")
def test_fuzz_encoder(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [sys.executable, str(FUZZER), f"-max_total_time={SECONDS}", f"-timeout={INPUT_TIMEOUT}",
               f"-artifact_prefix={artifacts}/", "-print_final_stats=1", str(corpus)]
    try:
        proc = subprocess.run(command, cwd=FUZZER.parent.parent.parent, capture_output=True, text=True,
                              errors="replace", timeout=SECONDS + 120)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the fuzzer did not stop within {SECONDS + 120} s\n{expired.stderr or ''}"[-20000:])
    if proc.returncode == 0:
        return
    found = sorted(artifacts.iterdir())
    inputs = "\n".join(f"{path.name}: {path.read_bytes()!r}" for path in found) or "(no input file written)"
    pytest.fail(f"fuzz_encoder.py exited {proc.returncode}\nfailing input(s):\n{inputs}\n"
                f"replay: {sys.executable} {FUZZER} {found[0] if found else 'FILE'}\n"
                f"--- fuzzer output (end) ---\n{proc.stderr[-15000:]}", pytrace=False)
