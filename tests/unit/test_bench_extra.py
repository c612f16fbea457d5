"""matplotlib and tqdm are the extra `ingest[bench]`: without them `ingest bench`
says which extra to install and exits 2, and `ingest bench --help` still works."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MISSING_EXTRA = "ingest: error: ingest bench needs its extra: pip install 'ingest[bench]'"

# A None in sys.modules is what an uninstalled package looks like to import and to find_spec.
CHILD = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from ingest.cli import main
sys.exit(main(sys.argv[2:]))
"""


def ingest_without(modules: tuple[str, ...], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, ",".join(modules), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={"PYTHONPATH": str(ROOT), "PATH": ""})


@pytest.mark.parametrize("missing", [("matplotlib", "tqdm"), ("matplotlib",), ("tqdm",)])
def test_bench_without_its_extra_says_which_to_install(missing, tmp_path):
    result = ingest_without(missing, "bench", "--quick", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (2, MISSING_EXTRA + "\n", "")
    assert not (tmp_path / "out").exists()


def test_bench_help_needs_no_extra(tmp_path):
    result = ingest_without(("matplotlib", "tqdm"), "bench", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--target" in result.stdout
