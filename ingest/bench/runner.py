"""What `ingest bench` runs, in order: the corpus, then every case against a
fresh server (or the `--target`), then the baselines on the same corpus.

A case is one transport and one batch size: its events are split among
client processes, all told to start at once; its throughput is its events
over the time from the first byte sent until GET /v1/stats shows all of them
landed (or rejected) in the case's table.
"""
from __future__ import annotations

import fnmatch
import json
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ingest.bench import baselines, machine
from ingest.bench.clients import ClientSpec
from ingest.bench.server_process import (BenchError, ServerUnderTest, TargetServer, child_command, child_environment,
                                         settled)
from ingest.testing.corpus import SHAPES

TRANSPORTS = ("tcp", "http")
BATCH_SIZES = (1, 100, 1_000, 10_000)
CASE_NAMES = tuple(f"{t}-{b}" for t in TRANSPORTS for b in BATCH_SIZES)
QUICK_CASES = ("tcp-1000", "http-1", "http-1000")
FULL_EVENTS = 1_000_000
QUICK_EVENTS = 50_000
ROW_INSERT_EVENTS = (5_000, 1_000)  # full, quick: one INSERT per event is slow
REFERENCE_ENCODER_EVENTS = (20_000, 2_000)  # full, quick: the pure-Python encoder is slow
POLL_INTERVAL = 0.01  # seconds between GET /v1/stats while a case lands
CLIENT_READY_TIMEOUT = 120


@dataclass
class BenchOptions:
    quick: bool = False
    out: Path | None = None
    events: int | None = None
    seed: int = 42
    sink: str | None = None  # duckdb, parquet or both
    shape: str = "nested"  # nested, flat or both
    cases: str | None = None  # comma-separated fnmatch patterns over case and baseline names
    clients: int | None = None
    pipeline: int | None = None
    batch_events: int = 250_000
    flush_interval: int = 200
    server_args: str | None = None  # more `ingest serve` flags, e.g. "--wal off"
    http_wait: str | None = None  # HTTP ack mode (?wait=...); None: the server's default
    timeout: float = 180.0
    repeat: int | None = None  # runs of each case; the median is reported
    target: str | None = None
    target_tcp: str | None = None
    target_tcp_table: str = "events"
    progress: bool | None = None  # None: when stderr is a terminal
    command: str = "ingest bench"  # as typed, for the report

    @property
    def total_events(self) -> int:
        return self.events or (QUICK_EVENTS if self.quick else FULL_EVENTS)

    @property
    def repeats(self) -> int:
        return self.repeat or (1 if self.quick else 3)

    @property
    def sinks(self) -> tuple[str, ...]:
        chosen = self.sink or ("duckdb" if self.quick else "both")
        return ("duckdb", "parquet") if chosen == "both" else (chosen,)

    @property
    def shapes(self) -> tuple[str, ...]:
        return tuple(SHAPES) if self.shape == "both" else (self.shape,)

    def selected(self, name: str) -> bool:
        if self.cases is None:
            return (name in QUICK_CASES or name in baselines.BASELINES) if self.quick else True
        return any(fnmatch.fnmatchcase(name, pattern.strip()) for pattern in self.cases.split(",") if pattern.strip())


@dataclass(frozen=True)
class Case:
    transport: str  # tcp or http
    batch: int  # events per send() call (TCP) or per request (HTTP)
    sink: str
    shape: str
    events: int
    clients: int
    pipeline: int  # HTTP requests in flight per connection

    @property
    def name(self) -> str:
        return f"{self.transport}-{self.batch}"


def case_events(transport: str, batch: int, events: int) -> int:
    """One event per send or request costs a syscall or a round trip each:
    those cases send a fraction of the corpus so the run stays short."""
    if batch == 1:
        return max(1_000, events // (5 if transport == "tcp" else 10))
    if transport == "http" and batch == 100:
        return max(1_000, events // 2)
    return events


def default_clients(transport: str, batch: int) -> int:
    return 4 if (transport, batch) == ("http", 1) else 2


def default_pipeline(batch: int) -> int:
    """HTTP requests in flight per connection: about 16,000 events' worth, at
    least 2, at most 256. The server acknowledges a request only once the
    write-ahead log is synced (every 20 ms by default), so a client with too
    few requests in flight measures that interval, not the server."""
    return max(2, min(256, 16_000 // batch))


@dataclass
class Corpus:
    shape: str
    seed: int
    path: Path
    data: bytes
    line_ends: np.ndarray = field(repr=False)  # offset just past each line's newline

    @classmethod
    def generate(cls, shape: str, events: int, seed: int, directory: Path) -> "Corpus":
        data = SHAPES[shape](events, seed=seed)
        path = directory / f"corpus-{shape}-{seed}-{events}.ndjson"
        path.write_bytes(data)
        line_ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")) + 1
        return cls(shape, seed, path, data, line_ends)

    @property
    def events(self) -> int:
        return len(self.line_ends)

    def offset(self, event: int) -> int:
        """Byte offset where event number `event` starts."""
        return 0 if event == 0 else int(self.line_ends[event - 1])


class Bench:
    def __init__(self, options: BenchOptions):
        self.options = options
        self.workdir: Path | None = None  # made when the run starts, removed when it ends
        self.run_id = time.strftime("%H%M%S")
        self.cases: list[dict] = []
        self.baselines: list[dict] = []
        self.notes: list[str] = []
        self.server_info: dict = {}

    # planning

    def planned_cases(self, shape: str, sinks: tuple[str, ...]) -> list[Case]:
        o = self.options
        cases = []
        for sink in sinks:
            for transport in TRANSPORTS:
                for batch in BATCH_SIZES:
                    if not o.selected(f"{transport}-{batch}"):
                        continue
                    cases.append(Case(
                        transport, batch, sink, shape, min(case_events(transport, batch, o.total_events), o.total_events),
                        o.clients or default_clients(transport, batch),
                        o.pipeline or default_pipeline(batch) if transport == "http" else 1,
                    ))
        return cases

    def planned_baselines(self) -> list[str]:
        return [name for name in baselines.BASELINES if self.options.selected(name)]

    # running

    def run(self) -> dict:
        o = self.options
        baseline_names = self.planned_baselines()
        if not any(o.selected(name) for name in CASE_NAMES) and not baseline_names:
            raise BenchError(f"--cases {o.cases!r} selects nothing; names are {', '.join(CASE_NAMES + baselines.BASELINES)}")
        if o.quick:
            self.notes.append("--quick: a small corpus, so start-up and the flush interval weigh on every figure; "
                              "for numbers to compare, run without --quick")
        target = self._open_target() if o.target else None
        started, load_before = time.time(), machine.load_average()
        self.workdir = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
        try:
            self._run_all(target, baseline_names)
        finally:
            if target is not None:
                target.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return {
            "command": o.command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "settings": self._settings(),
            "server": self.server_info,
            "cases": self.cases,
            "baselines": self.baselines,
            "notes": self.notes,
            "machine": {**machine.machine(), "load_average_before": load_before, "load_average_after": machine.load_average()},
            "versions": machine.versions(),
        }

    def _run_all(self, target: TargetServer | None, baseline_names: list[str]) -> None:

        o = self.options
        sinks = (target.sink,) if target else o.sinks
        plan = [(shape, self.planned_cases(shape, sinks)) for shape in o.shapes]
        steps = sum(1 + len(cases) * o.repeats + len(baseline_names) for _, cases in plan)
        with tqdm(total=steps, file=sys.stderr, unit="step", disable=None if o.progress is None else not o.progress,
                  bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]") as progress:
            for shape, cases in plan:
                progress.set_description(f"corpus {shape} ({o.total_events:,} events)")
                corpus = Corpus.generate(shape, o.total_events, o.seed, self.workdir)
                progress.update()
                for case in cases:
                    runs = []
                    for attempt in range(o.repeats):
                        progress.set_description(f"{case.name} {case.sink} {shape}"
                                                 + (f" #{attempt + 1}" if o.repeats > 1 else ""))
                        runs.append(self._run_case_safely(case, corpus, target))
                        progress.update()
                    self.cases.append(median_run(runs))
                self._run_baselines(corpus, baseline_names, progress)
                corpus.path.unlink()

    def _settings(self) -> dict:
        o = self.options
        return {
            "quick": o.quick, "events": o.total_events, "seed": o.seed, "shapes": list(o.shapes),
            "target": o.target, "server_flags": None if o.target else self._server_flags(),
            "poll_interval_seconds": POLL_INTERVAL, "repeats": o.repeats, "http_wait": o.http_wait,
        }

    def _server_flags(self) -> list[str]:
        o = self.options
        return (["--batch-events", str(o.batch_events), "--flush-interval", str(o.flush_interval), "--log-level", "warning"]
                + shlex.split(o.server_args or ""))

    def _open_target(self) -> TargetServer:
        o = self.options
        host, http_port = parse_address(o.target, "--target")
        tcp_port = None
        if o.target_tcp:
            tcp_host, tcp_port = parse_address(o.target_tcp if ":" in o.target_tcp else f"{host}:{o.target_tcp}", "--target-tcp")
            if tcp_host != host:
                raise BenchError("--target-tcp must be on the same host as --target")
        target = TargetServer(host, http_port, tcp_port, o.target_tcp_table)
        self.server_info = {"target": f"{host}:{http_port}", "sink": target.sink, "hot_path": target.hot_path,
                            "pid": target.probe.pid if target.probe else None, "tcp_port": target.tcp_port}
        if o.sink is not None:
            self.notes.append(f"--sink is ignored with --target: the target lands in {target.sink}")
        if target.probe is None:
            self.notes.append("target server's process not visible in /proc: no CPU or memory figures")
        if target.tcp_port is None:
            self.notes.append("target server's TCP port unknown (give --target-tcp): TCP cases skipped")
        return target

    def _run_case_safely(self, case: Case, corpus: Corpus, target: TargetServer | None) -> dict:
        record = {"case": case.name, "transport": case.transport, "batch": case.batch, "sink": case.sink,
                  "shape": case.shape, "events": case.events, "clients": case.clients,
                  "pipeline": case.pipeline if case.transport == "http" else None, "error": None}
        if target is not None and case.transport == "tcp" and target.tcp_port is None:
            record["skipped"] = "the target's TCP port is unknown (give --target-tcp)"
            return record
        try:
            record.update(self._run_case(case, corpus, target))
        except BenchError as exc:
            record["error"] = str(exc)
        return record

    def _run_case(self, case: Case, corpus: Corpus, target: TargetServer | None) -> dict:
        directory = self.workdir / f"{case.name}-{case.sink}-{case.shape}"
        directory.mkdir()
        server = target
        if target is None:
            table = f"{case.transport}_{case.batch}"
            server = ServerUnderTest(directory / "data", case.sink, table if case.transport == "tcp" else "events",
                                     self._server_flags(), directory / "server.log")
            self.server_info.setdefault("hot_path", server.stats.document().get("hot_path"))
        else:
            table = target.tcp_table if case.transport == "tcp" else f"bench_{case.transport}_{case.batch}_{self.run_id}"
        try:
            return LoadRun(case, corpus, server, table, directory, self.options).run()
        finally:
            if server is not target:
                server.stop()
            shutil.rmtree(directory, ignore_errors=True)

    def _run_baselines(self, corpus: Corpus, names: list[str], progress) -> None:
        if not names:
            return
        quick = self.options.quick
        directory = self.workdir / f"baselines-{corpus.shape}"
        directory.mkdir()
        try:
            encoded, batch = baselines.encoders(baselines.framed(corpus.data), corpus.events,
                                                min(corpus.events, REFERENCE_ENCODER_EVENTS[quick]), self.options.batch_events)
        except Exception as exc:  # e.g. the extension being rebuilt: the other baselines still run
            encoded, batch = exc, None
        for name in names:
            progress.set_description(f"baseline {name} {corpus.shape}")
            try:
                if name == "pyarrow":
                    figures = baselines.pyarrow_to_parquet(corpus.data, corpus.events, directory)
                elif name == "duckdb-read-ndjson":
                    figures = baselines.duckdb_read_ndjson(corpus.path, corpus.events, directory)
                elif isinstance(encoded, Exception):
                    raise encoded
                elif name == "duckdb-row-insert":
                    figures = baselines.duckdb_row_insert(corpus.data, min(corpus.events, ROW_INSERT_EVENTS[quick]),
                                                          batch, directory)
                else:
                    figures = encoded
            except Exception as exc:
                figures = [{"name": name, "key": name, "events": None, "seconds": None, "events_per_second": None,
                            "error": f"{type(exc).__name__}: {exc}"}]
            self.baselines.extend({**figure, "shape": corpus.shape} for figure in figures)
            progress.update()
        shutil.rmtree(directory, ignore_errors=True)


class LoadRun:
    """One case against one server: start the clients, watch the table land."""

    def __init__(self, case: Case, corpus: Corpus, server, table: str, directory: Path, options: BenchOptions):
        self.case, self.corpus, self.server, self.table = case, corpus, server, table
        self.directory, self.timeout, self.http_wait = directory, options.timeout, options.http_wait
        self.clients: list[subprocess.Popen] = []

    def run(self) -> dict:
        server = self.server
        specs = self._client_specs()
        environment = child_environment()
        try:
            for spec in specs:
                self.clients.append(subprocess.Popen(
                    child_command("ingest.bench.clients", spec.to_json()),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    env=environment,
                ))
            self._wait_ready()
            before = server.stats.table(self.table)
            probe = server.probe
            peak_reset = probe.reset_peak_rss() if probe else False
            cpu_before = probe.cpu_seconds() if probe else None
            for client in self.clients:
                client.stdin.write("go\n")
                client.stdin.flush()
            landed_curve, counters = self._watch_landing(settled(before))
            cpu_after = probe.cpu_seconds() if probe else None
            peak = probe.peak_rss_bytes() if probe else None
            results = self._client_results(specs)
        finally:
            for client in self.clients:
                if client.poll() is None:
                    client.kill()
                    client.wait()
        cpu_seconds = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        return self._figures(results, landed_curve, changes(before, counters), cpu_seconds, peak, peak_reset)

    def _client_specs(self) -> list[ClientSpec]:
        case, server, corpus = self.case, self.server, self.corpus
        port = server.tcp_port if case.transport == "tcp" else server.http_port
        clients = max(1, min(case.clients, -(-case.events // case.batch)))
        bounds = [case.events * k // clients for k in range(clients + 1)]
        return [
            ClientSpec(case.transport, server.host, port, self.table, self.http_wait, str(corpus.path),
                       corpus.offset(bounds[k]), corpus.offset(bounds[k + 1]), case.batch, case.pipeline,
                       str(self.directory / f"client-{k}.json"))
            for k in range(clients)
        ]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + CLIENT_READY_TIMEOUT
        for client in self.clients:
            ready, _, _ = select.select([client.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = client.stdout.readline() if ready else ""
            if line.strip() != "ready":
                client.kill()
                raise BenchError(f"{self.case.name}: a client did not get ready: {self._client_error(client)}")

    @staticmethod
    def _client_error(client: subprocess.Popen) -> str:
        if client.poll() is None:
            client.kill()
        client.wait()
        lines = (client.stderr.read() or "").strip().splitlines()
        return lines[-1] if lines else f"exit code {client.returncode}"

    def _watch_landing(self, before: int) -> tuple[list[tuple[float, int]], dict]:
        """(time, events settled) until all of the case's events have, polled
        every POLL_INTERVAL; the time is taken after the answer (conservative)."""
        stats, events = self.server.stats, self.case.events
        deadline = time.monotonic() + self.timeout
        curve = []
        while True:
            counters = stats.table(self.table)
            now = time.monotonic()
            done = settled(counters) - before
            curve.append((now, done))
            if done >= events:
                return curve, counters
            for client in self.clients:
                if client.poll() not in (None, 0):
                    raise BenchError(f"{self.case.name}: a client failed: {self._client_error(client)}")
            if now > deadline:
                raise BenchError(f"{self.case.name}: only {done:,} of {events:,} events landed within "
                                 f"{self.timeout:.0f} s (counters: {counters}); raise --timeout?")
            time.sleep(POLL_INTERVAL)

    def _client_results(self, specs: list[ClientSpec]) -> list[dict]:
        results = []
        for client, spec in zip(self.clients, specs):
            try:
                client.wait(60)
            except subprocess.TimeoutExpired:
                raise BenchError(f"{self.case.name}: a client did not finish after its events landed") from None
            if client.returncode != 0:
                raise BenchError(f"{self.case.name}: a client failed: {self._client_error(client)}")
            result = json.loads(Path(spec.result).read_text())
            latency_path = Path(spec.result + ".latency")
            result["latencies"] = np.fromfile(latency_path, dtype=np.float64) if latency_path.exists() else None
            results.append(result)
        return results

    def _figures(self, results, landed_curve, counters, cpu_seconds, peak_rss, peak_reset) -> dict:
        case = self.case
        first_send = min(r["first_send"] for r in results)
        landed_at = landed_curve[-1][0]
        seconds = landed_at - first_send
        nbytes = sum(r["bytes"] for r in results)
        requests = sum(r["requests"] for r in results)
        statuses: dict[str, int] = {}
        for r in results:
            for status, count in r["statuses"].items():
                statuses[str(status)] = statuses.get(str(status), 0) + count
        errors = [r["first_error"] for r in results if r["first_error"]]
        if counters["rejected"] or counters["dead_lettered"]:
            errors.append(f"{counters['rejected']:,} events rejected and {counters['dead_lettered']:,} dead-lettered "
                          "(see the server's log and dead-letter store)")
        ack = None
        if case.transport == "http":
            latencies = np.concatenate([r["latencies"] for r in results])
            ack = percentiles(latencies * 1000)
        return {
            "table": self.table,
            "bytes": nbytes,
            "requests": requests,
            "seconds": round(seconds, 4),
            "client_seconds": round(max(r["last_send"] for r in results) - first_send, 4),
            "events_per_second": round(case.events / seconds),
            "mb_per_second": round(nbytes / seconds / 1e6, 2),
            "requests_per_second": round(requests / seconds),
            "latency_ms": {
                "ack": ack,
                "landed": percentiles(landing_latencies([r["curve"] for r in results], landed_curve, case.events) * 1000),
            },
            "server_cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 3),
            "server_peak_rss_bytes": peak_rss,
            "server_peak_rss_since_case_start": peak_reset,
            "landed": counters["landed"],
            "rejected": counters["rejected"],
            "dead_lettered": counters["dead_lettered"],
            "sink_retries": counters["retries"],
            "batches_sealed": counters["batches_sealed"],
            "http_statuses": statuses or None,
            "http_retried": sum(r["retried"] for r in results) if case.transport == "http" else None,
            "error": errors[0] if errors else None,
        }


def median_run(runs: list[dict]) -> dict:
    """The run with the median events/s (a failed run makes the case failed),
    with every run's events/s beside it."""
    failed = [run for run in runs if run.get("error") or run.get("skipped")]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda run: run["events_per_second"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["runs_events_per_second"] = [run["events_per_second"] for run in runs]
    return median


def changes(before: dict, after: dict) -> dict:
    """The table's counters over the case (a target's tables may hold earlier events)."""
    def delta(name, fallback=None):
        value = lambda counters: counters.get(name, counters.get(fallback, 0) if fallback else 0)
        return value(after) - value(before)

    sealed_before = before.get("batches_sealed") or {}
    return {
        "landed": delta("landed"), "rejected": delta("rejected"), "dead_lettered": delta("dead_lettered", "failed"),
        "retries": delta("retries"),
        "batches_sealed": {trigger: count - sealed_before.get(trigger, 0)
                           for trigger, count in (after.get("batches_sealed") or {}).items()},
    }


def percentiles(values: np.ndarray) -> dict | None:
    if values is None or not len(values):
        return None
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


def landing_latencies(sent_curves: list, landed_curve: list, events: int, samples: int = 2000) -> np.ndarray:
    """How long events waited between being sent and being visible as landed.

    The clients' (time, events sent) increments are merged into one
    sent-curve S(t); the stats polls give the landed-curve L(t). Taking the
    batches as landing in the order they were sent, the k-th event waited
    L⁻¹(k) − S⁻¹(k): the horizontal distance between the curves, read at
    `samples` evenly spaced k. Resolution: one poll interval.
    """
    increments = sorted(tuple(point) for curve in sent_curves for point in curve)
    sent_t = np.array([t for t, _ in increments])
    sent_n = np.cumsum([n for _, n in increments])
    landed_t = np.array([t for t, _ in landed_curve])
    landed_n = np.maximum.accumulate(np.array([n for _, n in landed_curve]))
    k = np.linspace(1, events, num=min(samples, events))
    sent_at = sent_t[np.minimum(np.searchsorted(sent_n, k), len(sent_t) - 1)]
    landed_at = landed_t[np.minimum(np.searchsorted(landed_n, k), len(landed_t) - 1)]
    return np.maximum(landed_at - sent_at, 0.0)


def parse_address(value: str, option: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise BenchError(f"{option} wants HOST:PORT (e.g. 127.0.0.1:7080), not {value!r}")
    return host, int(port)
