"""Three servers writing one Delta table, on the local filesystem and on S3
(moto), under load spread over all three; one is killed with -9 mid-load
and restarted on its data directory. Every acknowledged event is in the
table exactly once."""
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import poll

LOAD = str(Path(__file__).with_name("spread_load.py"))
NODES = ("a", "b", "c")
LOADERS = 3  # load processes, each spreading its requests over every node
PER_LOADER = 10_000  # events per loader after the restart (before the kill: until the node to kill has landed some)


def recorded(paths) -> tuple[set[int], set[int]]:
    """(acknowledged ids, ids of requests whose connection broke) in the loaders' record files."""
    ids: dict[str, set[int]] = {"acked": set(), "unknown": set()}
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                kind, start, stop = line.split()
                ids[kind].update(range(int(start), int(stop)))
    return ids["acked"], ids["unknown"]


def test_three_nodes_one_table_kill_9_one_acknowledged_events_land_exactly_once(start_server, tmp_path, lake):
    from deltalake import DeltaTable

    def node(name):
        return start_server("--sink", "delta", "--delta-uri", lake.uri, "--node-id", name, "--flush-interval", 50,
                            *lake.args, data_dir=tmp_path / name, extra_env=lake.env)

    def load(phase, servers, count):
        records = [tmp_path / f"load-{phase}-{n}.txt" for n in range(LOADERS)]
        processes = [subprocess.Popen([sys.executable, LOAD, "t", str((phase * LOADERS + n) * 1_000_000),
                                       str(count), str(path), *(str(s.http_port) for s in servers.values())],
                                      stdin=subprocess.PIPE)
                     for n, path in enumerate(records)]
        return records, processes

    servers = {name: node(name) for name in NODES}
    first_records, loaders = load(0, servers, 1_000_000)  # until told to stop
    # kill -9 one node under load, once it has committed some of its share (so its log holds landed records)
    poll(lambda: len(recorded(first_records)[0]) >= PER_LOADER and servers["b"].stats("t").get("landed", 0) >= 1000,
         what="acknowledgements, and commits by the node to kill")
    servers["b"].proc.send_signal(signal.SIGKILL)
    servers["b"].proc.wait()
    # every loader meets the dead node within a round of its requests, then goes on with the others
    poll(lambda: all("unknown" in path.read_text() for path in first_records), what="each loader to meet the dead node")
    for process in loaders:
        process.stdin.write(b"stop\n")
        process.stdin.close()
    for process in loaders:
        assert process.wait(timeout=120) == 0
    acked, unknown = recorded(first_records)
    servers["b"] = node("b")  # its write-ahead log replayed against its watermark in the table
    # its log held records that had landed (skipped by its watermark) and maybe some that had not (replayed)
    assert re.search(r"write-ahead log: replayed \d+ events; [1-9]\d* records had already landed", servers["b"].log())
    second_records, loaders = load(1, servers, PER_LOADER)
    for process in loaders:
        assert process.wait(timeout=120) == 0
        process.stdin.close()
    more_acked, more_unknown = recorded(second_records)
    acked |= more_acked
    unknown |= more_unknown
    assert not more_unknown
    assert len(more_acked) == LOADERS * PER_LOADER

    for server in servers.values():
        poll(lambda: server.stats("t").get("buffered", 0) == 0, what="every node's events to land")
        assert server.stats("t").get("dead_lettered", 0) == 0

    answer = servers["a"].query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM t").to_pylist()[0]
    table = DeltaTable(f"{lake.uri}/t", storage_options=lake.storage_options or None)
    landed = table.to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    assert answer["n"] == answer["ids"] == len(landed) == len(set(landed))  # no event twice
    missing = acked - set(landed)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert set(landed) - acked <= unknown  # the rest were in flight when the node died
    assert all(table.transaction_version(name) is not None for name in NODES)  # each node's watermark
    for server in servers.values():
        assert server.stop() == 0


def test_the_scale_out_bench_runs_and_prints_its_table():
    """bench/scale_out.py --quick end to end; its figures are never asserted."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "scale_out.py"
    result = subprocess.run([sys.executable, str(bench), "--quick", "--nodes", "1", "2"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[0] for row in rows] == ["1", "2"] and rows[0][3] == "1.00x"
