"""The Delta sink with several writers on one table, on the local filesystem
and on S3 (moto): a Delta version is won by one commit only, and a node
that crashes after its commit but before its log is cleaned up lands
nothing twice."""
import json
import subprocess
import sys

from test_wal import kill, lines_body

from ingest.durability.wal import scan_segment, segment_paths

WRITER = """
import json, sys
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
uri, name, first, commits, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
table = DeltaTable(uri, storage_options=options or None)
print("ready", flush=True)
sys.stdin.readline()  # all writers start together
won = []
for n in range(commits):
    write_deltalake(table, pa.table({"id": [first + n], "writer": [name]}), mode="append",
                    commit_properties=CommitProperties(app_transactions=[Transaction(name, n + 1)], max_commit_retries=1000))
    won.append(table.version())
print(json.dumps(won))
"""


def test_concurrent_writers_never_both_win_a_version(request, lake):
    """Each commit is a conditional create of the next _delta_log/N.json: if
    two writers could both create N, one commit (its rows, its watermark)
    would be silently lost."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    uri, options = f"{lake.uri}/race", lake.storage_options or None
    write_deltalake(uri, pa.table({"id": [-1], "writer": ["setup"]}), storage_options=options)
    writers, commits = 3, 12
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, uri, f"w{w}", str(w * 1000), str(commits),
                                   json.dumps(lake.storage_options)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
                 for w in range(writers)]
    for process in processes:
        assert process.stdout.readline() == "ready\n"
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    won = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    versions = sorted(v for versions in won for v in versions)
    assert versions == list(range(1, writers * commits + 1))  # every version won by exactly one commit
    table = DeltaTable(uri, storage_options=options)
    ids = table.to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == writers * commits + 1
    assert [table.transaction_version(f"w{w}") for w in range(writers)] == [commits] * writers
    if "moto_s3" in request.fixturenames:  # the race was run: the store refused a second create of a version
        refused = [line for line in request.getfixturevalue("moto_s3").log().splitlines()
                   if "PUT /" in line and "/race/_delta_log/" in line and '" 412 ' in line]
        assert refused


def test_a_crash_between_commit_and_log_cleanup_replays_nothing_twice(start_server, tmp_path, lake):
    """wait=flushed answers once the batch is committed to the Delta table;
    kill -9 right then leaves its records in the write-ahead log. On restart
    each node reads its own watermark from the table (among the other node's
    commits) and skips them."""
    from deltalake import DeltaTable

    def node(name):
        return start_server("--sink", "delta", "--delta-uri", lake.uri, "--node-id", name, "--flush-interval", 20,
                            *lake.args, data_dir=tmp_path / name, extra_env=lake.env)

    def send(server, first, count):
        status, _, body = server.http("POST", "/v1/ingest/t?wait=flushed", lines_body(first, count),
                                      {"Content-Type": "application/x-ndjson"})
        assert status == 200 and json.loads(body)["status"] == "landed", body

    a, b = node("a"), node("b")
    for first in range(0, 300, 50):  # the two nodes' commits interleaved in one table
        send(a, first, 25)
        send(b, first + 25, 25)
    kill(a)
    kill(b)
    for name in ("a", "b"):
        records = [r for segment in segment_paths(tmp_path / name / "wal") for r in scan_segment(segment).records]
        assert len(records) == 6, name  # committed, and still in the log
    a, b = node("a"), node("b")
    for server in (a, b):
        assert "write-ahead log: replayed 0 events; 6 records had already landed" in server.log()
    send(a, 1000, 10)  # and the nodes go on from their watermarks
    send(b, 2000, 10)
    for server in (a, b):
        assert server.query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM t").to_pylist() == \
            [{"n": 320, "ids": 320}]
    table = DeltaTable(f"{lake.uri}/t", storage_options=lake.storage_options or None)
    assert table.to_pyarrow_table(columns=["id"]).num_rows == 320
    assert table.transaction_version("a") is not None and table.transaction_version("b") is not None
    for server in (a, b):
        assert server.stats("t")["batches_already_landed"] == 0
        assert server.stop() == 0
