"""The Delta sink end to end: a dead node's log replayed by another
machine, compaction and vacuum beside a running writer, the operator's
mistakes as one-line errors."""
import json
import shutil
import subprocess
import sys

from deltalake import DeltaTable
from test_operator import one_line_error, serve
from test_wal import NEVER, kill, lines_body


def ingest_cli(*args):
    return subprocess.run([sys.executable, "-m", "ingest", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def query_json(data_dir, sql):
    done = ingest_cli("query", "--data-dir", data_dir, "--format", "json", sql)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_another_machine_replays_a_dead_nodes_log_exactly_once(start_server, tmp_path):
    lake = (tmp_path / "lake").as_uri()
    data_dir = tmp_path / "node-a"
    server = start_server("--sink", "delta", "--delta-uri", lake, "--node-id", "node-a", "--batch-events", 300,
                          "--flush-interval", 600_000, data_dir=data_dir)
    assert server.ingest("t", lines_body(0, 600))[0] == 200  # two batches land
    server.wait_landed("t", 600)
    assert server.ingest("t", lines_body(600, 250))[0] == 200  # logged, acknowledged, not landed
    kill(server)
    taken_over = tmp_path / "copied-to-another-machine"
    shutil.copytree(data_dir, taken_over)
    done = ingest_cli("wal", "replay", "--data-dir", taken_over)
    assert done.returncode == 0, done.stderr
    assert "replayed 250 events" in done.stdout and "1 records had already landed" in done.stderr  # the 600-event request
    assert query_json(taken_over, "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM t") == {"n": 850, "ids": 850}
    again = ingest_cli("wal", "replay", "--data-dir", taken_over)
    assert again.returncode == 0 and "replayed 0 events" in again.stdout, again.stderr
    assert query_json(taken_over, "SELECT count(*) AS n FROM t") == {"n": 850}


def test_compaction_and_vacuum_beside_a_running_writer(start_server, tmp_path):
    server = start_server("--sink", "delta", "--batch-events", 50, "--flush-interval", 600_000)
    table = (server.data_dir / "delta" / "t").as_uri()
    for first in range(0, 1000, 50):  # a request is never split: 20 batches, 20 files
        assert server.ingest("t", lines_body(first, 50))[0] == 200
    server.wait_landed("t", 1000)
    files_before = len(DeltaTable(table).file_uris())
    assert files_before == 20
    compaction = subprocess.Popen([sys.executable, "-m", "ingest", "compact", "--table", "t", "--data-dir",
                                   str(server.data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = 1000
    while compaction.poll() is None or sent < 2000:  # appends go on while it runs, and after
        assert server.ingest("t", lines_body(sent, 50))[0] == 200
        sent += 50
    out, err = compaction.communicate()
    assert compaction.returncode == 0, err
    compacted = json.loads(out)["numFilesRemoved"]
    assert compacted >= files_before
    server.wait_landed("t", sent)
    assert server.query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM t").to_pylist() == [
        {"n": sent, "ids": sent}]
    assert len(DeltaTable(table).file_uris()) < files_before + (sent - 1000) // 50
    replaced = ingest_cli("vacuum", "--retain", 0, "--data-dir", server.data_dir)
    assert replaced.returncode == 0 and f"removed {compacted} file(s)" in replaced.stderr, replaced.stderr
    on_disk = list((server.data_dir / "delta" / "t").glob("*.parquet"))
    assert len(on_disk) == len(DeltaTable(table).file_uris())  # what vacuum left is what the table reads
    assert server.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": sent}]
    assert server.stop() == 0


def test_operator_mistakes_are_one_line_errors(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server("--sink", "delta", "--node-id", "east-1", *NEVER, data_dir=data_dir)
    assert server.stop() == 0
    line = one_line_error(serve(data_dir, "--sink", "delta", "--node-id", "west-1"))
    assert "belongs to node 'east-1'" in line
    bad_uri = serve(data_dir, "--sink", "delta", "--delta-uri", "ftp://x/y")  # a usage error, as every bad setting
    assert bad_uri.returncode == 2 and "Traceback" not in bad_uri.stderr
    assert "error: delta_uri must be file:///path or s3://bucket/prefix, not 'ftp://x/y'" in bad_uri.stderr
    missing = ingest_cli("compact", "--table", "nothing_here", "--data-dir", data_dir)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr


def test_the_readme_delta_example_runs_as_pasted(tmp_path, monkeypatch):
    """README.md's "Delta Lake" shell lines and readers, in a fresh directory."""
    import os
    import re
    import shlex
    from pathlib import Path

    from ingest.testing.server_process import ServerProcess

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Delta Lake: one table from many servers", 1)[1].split("\n## ", 1)[0]
    shell, python = re.findall(r"```\n(.*?)```", section, re.S)[0], re.findall(r"```python\n(.*?)```", section, re.S)[0]
    install_line, serve_line, send_line, query_line = (shlex.split(line, comments=True)
                                                       for line in shell.strip().splitlines())
    assert install_line == [".venv/bin/pip", "install", "-e", ".[delta]", "polars"]  # this test's venv has them
    assert serve_line[:2] == [".venv/bin/ingest", "serve"] and send_line[0] == "curl"
    assert query_line[:2] == [".venv/bin/ingest", "query"]
    monkeypatch.chdir(tmp_path)  # the README's relative paths; its --data-dir, last, wins over the fixture's
    server = ServerProcess(tmp_path / "data-delta", serve_line[2:], dict(os.environ))
    try:
        url = send_line[send_line.index("-s") + 1]
        status, _, reply = server.http("POST", url[url.index("/v1/"):], send_line[-1].encode())
        assert status == 200 and json.loads(reply)["landed"] == 1
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    done = ingest_cli(*query_line[1:], "--format", "json")  # as pasted, output as JSON
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ts_date": "2026-12-07", "count_star()": 1}
    scope = {}
    exec(python, scope)
    assert scope["events"].count_rows() == 1
