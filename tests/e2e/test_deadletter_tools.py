"""`ingest deadletter list|show|purge` on real dead-letter files."""
import json
import subprocess
import sys

from ingest.core.deadletter import DeadLetterStore


def deadletter(data_dir, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "ingest", "deadletter", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, input=stdin)


def test_list_show_and_purge(start_server):
    server = start_server("--flush-interval", 100)
    server.ingest("web", b'{"a":1}\n{"a":\n[1]\n')
    server.wait_landed("web", 1)
    assert server.stop() == 0

    listed = deadletter(server.data_dir, "list", "--format", "json")
    assert listed.returncode == 0
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["table"], entry["kind"], entry["rows"], entry["replayed"]) == ("web", "rejected", 2, False)
    table_view = deadletter(server.data_dir, "list")
    assert "web" in table_view.stdout and "rejected input" in table_view.stdout

    shown = deadletter(server.data_dir, "show", entry["file"])
    assert shown.returncode == 0
    assert '"line": "{\\"a\\":"' in shown.stdout and "top-level value is not an object" in shown.stdout

    refused = deadletter(server.data_dir, "purge", stdin="")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert DeadLetterStore(server.data_dir / "deadletter").entries()
    purged = deadletter(server.data_dir, "purge", "--yes")
    assert purged.returncode == 0 and "deleted 1 file(s), 2 event(s)" in purged.stdout
    assert DeadLetterStore(server.data_dir / "deadletter").entries() == []


def test_replay_needs_a_running_server(tmp_path):
    result = deadletter(tmp_path, "replay")
    assert result.returncode == 1 and "no server is running" in result.stderr
