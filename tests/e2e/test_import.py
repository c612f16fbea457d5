"""`ingest import` as a user runs it: a subprocess on real files, into a
real data directory (DuckDB, Parquet, Delta) or through a real server;
killed with SIGKILL part-way and run again, every event lands once."""
import gzip
import json
import os
import signal
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.core.deadletter import DeadLetterStore

SINKS = ["duckdb", "parquet", "delta"]


def events(first: int, count: int) -> bytes:
    return b"".join(b'{"id":%d,"name":"event-%d","amount":%d.5}\n' % (i, i, i) for i in range(first, first + count))


def write_gzip_files(directory, files: int, per_file: int) -> list:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(files):
        path = directory / f"part-{n}.ndjson.gz"
        path.write_bytes(gzip.compress(events(n * per_file, per_file)))
        paths.append(path)
    return paths


def ingest_import(*args, stdin: bytes | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "ingest", "import", *map(str, args)], input=stdin,
                          capture_output=True, timeout=300, env={**os.environ, **(env or {})})


def query(data_dir, sql: str) -> list[tuple]:
    result = subprocess.run([sys.executable, "-m", "ingest", "query", "--data-dir", str(data_dir), "--format", "json",
                             sql], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [tuple(json.loads(line).values()) for line in result.stdout.splitlines()]


def summary(result) -> dict:
    """The JSON summary (--progress json) on stdout."""
    assert result.stdout, result.stderr
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def exactly_once(data_dir, table: str, total: int) -> None:
    [(rows, distinct, low, high)] = query(data_dir, f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {table}")
    assert (rows, distinct, low, high) == (total, total, 0, total - 1)


@pytest.mark.parametrize("sink", SINKS)
def test_kill_9_part_way_through_a_multi_file_gzip_import_then_the_same_command_lands_every_event_once(tmp_path, sink):
    write_gzip_files(tmp_path / "in", files=3, per_file=4000)
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "ingest", "import", str(tmp_path / "in" / "*.gz"), "--table", "events",
               "--data-dir", str(data_dir), "--sink", sink, "--batch-events", "500", "--progress", "json",
               "--progress-interval", "0"]
    # each write takes a while, so the kill finds the import with batches landed, queued and unread
    importer = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                env={**os.environ, "INGEST_SINK_DELAY_MS": "40"})
    landed = 0
    for line in importer.stderr:  # a line per batch read; each says how many events have landed so far
        progress = json.loads(line)
        landed = progress["events_landed"]
        if progress["file_index"] >= 1 and landed >= 2500:
            break
    importer.send_signal(signal.SIGKILL)
    importer.wait()
    importer.stderr.close()
    assert 2500 <= landed < 12000

    rerun = ingest_import(tmp_path / "in" / "*.gz", "--table", "events", "--data-dir", data_dir, "--progress", "json")
    assert rerun.returncode == 0, rerun.stderr
    done = summary(rerun)
    assert done["files_resumed"] + done["files_skipped"] >= 1
    assert 0 < done["events_landed"] <= 12000 - landed  # what had landed before the kill is not landed again
    exactly_once(data_dir, "events", 12000)
    again = ingest_import(tmp_path / "in" / "*.gz", "--table", "events", "--data-dir", data_dir, "--progress", "json")
    assert again.returncode == 0 and summary(again)["events_landed"] == 0
    exactly_once(data_dir, "events", 12000)


@pytest.mark.parametrize("sink", ["duckdb", "parquet"])
def test_a_bad_line_is_dead_lettered_with_its_file_and_line_and_the_events_around_it_land(tmp_path, sink):
    source = tmp_path / "mixed.ndjson"
    source.write_bytes(events(0, 3) + b"\n" + b'{"id": 3, "broken": \n' + b"   \n" + events(4, 3) + b"not json at all\n"
                       + events(7, 3).rstrip(b"\n"))
    data_dir = tmp_path / "data"
    result = ingest_import(source, "--table", "mixed", "--data-dir", data_dir, "--sink", sink, "--progress", "json")
    assert result.returncode == 0, result.stderr
    done = summary(result)
    assert (done["events_landed"], done["events_rejected"]) == (9, 2)
    assert sorted(r[0] for r in query(data_dir, "SELECT id FROM mixed")) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    store = DeadLetterStore(data_dir / "deadletter")
    [entry] = store.entries("mixed")
    rejected = store.read(entry.path).to_pylist()
    assert [(r["line"], r["source"]) for r in rejected] == [
        (b'{"id": 3, "broken": ', f"{source}:5"), (b"not json at all", f"{source}:10")]


def test_max_errors_stops_the_import_with_a_clear_line(tmp_path):
    source = tmp_path / "bad.ndjson"
    source.write_bytes(b"nope\n" * 3 + events(0, 10))
    result = ingest_import(source, "--table", "t", "--data-dir", tmp_path / "data", "--max-errors", "1",
                           "--progress", "none")
    assert result.returncode == 1
    assert b"more than 1 lines were rejected (--max-errors)" in result.stdout
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("compress", [False, True])
def test_stdin(tmp_path, compress):
    body = events(0, 2500)
    data_dir = tmp_path / "data"
    result = ingest_import("-", "--table", "piped", "--data-dir", data_dir, "--batch-events", "1000",
                           "--progress", "json", stdin=gzip.compress(body) if compress else body)
    assert result.returncode == 0, result.stderr
    assert summary(result)["events_landed"] == 2500
    exactly_once(data_dir, "piped", 2500)


def test_a_file_changed_after_a_checkpoint_is_refused_and_restart_begins_a_new_import(tmp_path):
    [path] = write_gzip_files(tmp_path / "in", files=1, per_file=1000)
    data_dir = tmp_path / "data"
    first = ingest_import(path, "--table", "t", "--data-dir", data_dir, "--progress", "none")
    assert first.returncode == 0, first.stderr
    path.write_bytes(gzip.compress(events(0, 1000) + events(1000, 5)))  # someone appended to it
    refused = ingest_import(path, "--table", "t", "--data-dir", data_dir, "--progress", "none")
    assert refused.returncode == 2
    [line] = refused.stderr.decode().strip().splitlines()
    assert line.startswith(f"ingest import: {path} changed since this import began reading it (its size went from")
    assert "--restart" in line
    restarted = ingest_import(path, "--table", "other", "--data-dir", data_dir, "--progress", "json")
    assert summary(restarted)["events_landed"] == 1005  # another table is another import: no refusal
    again = ingest_import(path, "--table", "t", "--data-dir", data_dir, "--restart", "--progress", "json")
    assert again.returncode == 0 and summary(again)["events_landed"] == 1005


def test_json_arrays_parquet_zstd_directories_and_globs(tmp_path):
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    (inputs / "array.json").write_bytes(b"[" + b",".join(events(0, 100).splitlines()) + b"]")
    pq.write_table(pa.table({"id": list(range(100, 300)), "name": [f"p{i}" for i in range(200)]}),
                   inputs / "nested" / "rows.parquet", row_group_size=64)
    with pa.output_stream(str(inputs / "nested" / "more.ndjson.zst"), compression="zstd") as out:
        out.write(events(300, 150))
    (inputs / ".hidden.ndjson").write_bytes(b"skipped: hidden files are not inputs\n")
    data_dir = tmp_path / "data"
    result = ingest_import(inputs, "--table", "mixed", "--data-dir", data_dir, "--batch-events", "50",
                           "--progress", "json")
    assert result.returncode == 0, result.stderr
    assert summary(result)["events_landed"] == 450
    exactly_once(data_dir, "mixed", 450)
    again = ingest_import(str(inputs / "**" / "*"), "--table", "mixed", "--data-dir", data_dir, "--progress", "none")
    assert again.returncode == 0  # another set of arguments is another import: it lands the files again
    [(rows,)] = query(data_dir, "SELECT count(*) FROM mixed")
    assert rows == 900


def test_operator_mistakes_are_one_line(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(data_dir=data_dir)
    (tmp_path / "a.ndjson").write_bytes(events(0, 10))
    for args, expected in [
        (["--data-dir", data_dir], f"is running on {data_dir}: import through it with --target http://127.0.0.1:"),
        (["--target", "http://127.0.0.1:9"], "cannot reach the server at http://127.0.0.1:9"),
        (["--data-dir", tmp_path / "other", "--table", "_ingest_x"], "reserved"),
        (["--data-dir", tmp_path / "other", str(tmp_path / "missing.ndjson")], "no such file or directory"),
        (["--data-dir", tmp_path / "other", str(tmp_path / "*.csv")], "matches no files"),
        (["--target", f"http://127.0.0.1:{server.http_port}", "--data-dir", data_dir], "leave out --data-dir"),
    ]:
        paths = [a for a in args if str(a).endswith((".ndjson", ".csv"))]
        rest = [a for a in args if a not in paths]
        table = [] if "--table" in rest else ["--table", "t"]
        result = ingest_import(*(paths or [tmp_path / "a.ndjson"]), *table, *rest, "--progress", "none")
        assert result.returncode == 2, (args, result)
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in lines[0], (args, lines)
    assert server.stop() == 0


def test_through_a_server_kill_9_and_rerun_lands_once_and_429s_are_waited_out(start_server, tmp_path):
    write_gzip_files(tmp_path / "in", files=2, per_file=6000)
    # a small memory budget and a slow sink: the server answers 429 while it catches up
    server = start_server("--max-buffer-bytes", 60_000, "--sink-delay-ms", 30, "--flush-interval", 20)
    target = f"http://127.0.0.1:{server.http_port}"
    state = tmp_path / "state"
    command = [sys.executable, "-m", "ingest", "import", str(tmp_path / "in"), "--table", "remote", "--target", target,
               "--state-dir", str(state), "--batch-bytes", "16000", "--progress", "json", "--progress-interval", "0"]
    importer = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    for line in importer.stderr:
        if json.loads(line)["events_landed"] >= 3000:
            break
    importer.send_signal(signal.SIGKILL)
    importer.wait()
    importer.stderr.close()
    rerun = ingest_import(tmp_path / "in", "--table", "remote", "--target", target, "--state-dir", state,
                         "--batch-bytes", "16000", "--progress", "json")
    assert rerun.returncode == 0, rerun.stderr
    done = summary(rerun)
    assert done["files_resumed"] + done["files_skipped"] >= 1 and done["events_read"] < 12000
    server.wait_landed("remote", 12000)
    [(rows, distinct)] = [tuple(r.values()) for r in
                          server.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM remote").to_pylist()]
    assert (rows, distinct) == (12000, 12000)
    _, _, metrics = server.http("GET", "/metrics")
    refused = [line for line in metrics.decode().splitlines()
               if line.startswith("ingest_http_requests_total") and 'status="429"' in line]
    assert refused, "the server never answered 429: the test did not test waiting it out"
    assert server.stop() == 0


def test_the_readme_example_runs_as_pasted(tmp_path):
    """README.md's "Backfills" shell lines, in a fresh directory with this venv."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Backfills: `ingest import`", 1)[1].split("\n## ", 1)[0]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "200,000 events landed, 0 rejected, 0 dead-lettered" in result.stdout
    assert result.stdout.splitlines()[-3:] == ["--------+--------", "200000 | 200000", "(1 row)"]


@pytest.mark.parametrize("sink", SINKS)
def test_a_server_on_the_data_dir_after_an_import_replays_only_its_own_log(start_server, tmp_path, sink):
    """The import's batch ids (files' byte offsets) share the sink's ledger with
    the write-ahead log's lsns: recovery must take none of them for its own."""
    data_dir = tmp_path / "data"
    source = tmp_path / "big.ndjson"
    source.write_bytes(events(0, 3000))
    assert ingest_import(source, "--table", "t", "--data-dir", data_dir, "--sink", sink,
                         "--progress", "none").returncode == 0
    server = start_server("--sink", sink, "--flush-interval", 600_000, "--batch-events", 1_000_000,
                          data_dir=data_dir)
    status, _, _ = server.http("POST", "/v1/ingest/t", events(3000, 500))  # logged, not landed
    assert status == 200
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server = start_server("--sink", sink, "--flush-interval", 20, data_dir=data_dir)
    server.wait_landed("t", 500)  # the 500 replayed from the log, none taken for landed
    assert server.stop() == 0
    exactly_once(data_dir, "t", 3500)
