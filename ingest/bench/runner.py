"""What `ingest bench` runs, in order: the corpus, then every case against a
fresh server (or the `--target`), then the baselines on the same corpus.

A case is one transport and one batch size: its events are split among
client processes, all told to start at once; its throughput is its events
over the time from the first byte sent until GET /v1/stats shows all of them
landed (or rejected) in the case's table.

Two kinds of HTTP case: what real clients do (`http-1-c32`: 32 connections,
one request in flight on each, one event per request; `-none`: the same
asking ?wait=none), which lead the report; and the pipelined capacity cases
(`http-1`: a few connections, many requests in flight), the most the server
takes. With ClickHouse at hand, the real-client cases also run against it.
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

from ingest.bench import baselines, clickhouse, imports, machine
from ingest.bench.clients import ClientSpec
from ingest.bench.server_process import (BenchError, ServerUnderTest, TargetServer, child_command, child_environment,
                                         settled)
from ingest.testing.corpus import SHAPES

TRANSPORTS = ("tcp", "http")
BATCH_SIZES = (1, 100, 1_000, 10_000)


@dataclass(frozen=True)
class ClientCase:
    """HTTP as real clients send: `connections` connections, one request in
    flight on each (no pipelining), `batch` events per request."""
    batch: int
    connections: int
    wait: str | None = None  # None: the ack asked for by --http-wait, else the server's default

    @property
    def name(self) -> str:
        return f"http-{self.batch}-c{self.connections}" + (f"-{self.wait}" if self.wait else "")


CLIENT_CASES = (ClientCase(1, 32), ClientCase(1, 32, "none"), ClientCase(1_000, 16), ClientCase(10_000, 8),
                ClientCase(1, 1), ClientCase(1, 1, "none"))
CAPACITY_CASE_NAMES = tuple(f"{t}-{b}" for t in TRANSPORTS for b in BATCH_SIZES)  # pipelined HTTP, TCP
CASE_NAMES = tuple(c.name for c in CLIENT_CASES) + CAPACITY_CASE_NAMES
QUICK_CASES = ("http-1-c32", "http-1-c32-none", "http-1000-c16", "tcp-1000", "http-1000")
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
    clickhouse: str | None = None  # URL of a running ClickHouse; None: start one when clickhouse-server is on PATH
    no_clickhouse: bool = False
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
    name: str
    transport: str  # tcp or http
    batch: int  # events per send() call (TCP) or per request (HTTP)
    sink: str  # duckdb or parquet; clickhouse-mergetree or clickhouse-buffer for ClickHouse's
    shape: str
    events: int
    clients: int  # client processes
    connections: int  # HTTP connections in all (TCP: one per client)
    pipeline: int  # HTTP requests in flight per connection
    wait: str | None = None  # ?wait= asked for; None: the server's default
    one_in_flight: bool = False  # a real-client case (ClientCase)

    @property
    def server(self) -> str:
        return "clickhouse" if self.sink.startswith("clickhouse") else "ingest"


def case_events(transport: str, batch: int, events: int, connections: int = 0) -> int:
    """One event per send or request costs a syscall or a round trip each:
    those cases send a fraction of the corpus so the run stays short; one
    connection sending one event at a time, a smaller fraction still."""
    if batch == 1:
        return max(1_000, events // (5 if transport == "tcp" else 200 if connections == 1 else 10))
    if transport == "http" and batch == 100:
        return max(1_000, events // 2)
    return events


def default_clients(transport: str, batch: int, connections: int = 0) -> int:
    if connections:  # a client process drives several connections
        return min(connections, 4 if batch == 1 else 2)
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
        self.clickhouse: clickhouse.ClickHouse | None = None
        self.clickhouse_info: dict | None = None

    # planning

    def planned_cases(self, shape: str, sinks: tuple[str, ...]) -> list[Case]:
        """For each sink, the real-client cases, then the capacity cases."""
        o = self.options
        cases = []
        for sink in sinks:
            cases += [self._client_case(client_case, sink, shape, client_case.wait or o.http_wait)
                      for client_case in CLIENT_CASES if o.selected(client_case.name)]
            for transport in TRANSPORTS:
                for batch in BATCH_SIZES:
                    if not o.selected(f"{transport}-{batch}"):
                        continue
                    clients = o.clients or default_clients(transport, batch)
                    cases.append(Case(
                        f"{transport}-{batch}", transport, batch, sink, shape,
                        min(case_events(transport, batch, o.total_events), o.total_events), clients, clients,
                        o.pipeline or default_pipeline(batch) if transport == "http" else 1,
                        o.http_wait if transport == "http" else None,
                    ))
        return cases

    def planned_clickhouse_cases(self) -> list[Case]:
        """The real-client cases without a ?wait= of their own, into MergeTree,
        and those of 1 and 1,000 events per request into a Buffer table too."""
        if self.options.no_clickhouse:
            return []
        return [self._client_case(client_case, f"clickhouse-{engine}", clickhouse.SHAPE, None,
                                  clickhouse.ROW_INSERT_EVENTS if (engine, client_case.batch) == ("mergetree", 1) else None)
                for engine in clickhouse.ENGINES for client_case in CLIENT_CASES
                if client_case.wait is None and self.options.selected(client_case.name)
                and (engine == "mergetree" or client_case.batch in clickhouse.BUFFER_BATCHES)]

    def _client_case(self, client_case: ClientCase, sink: str, shape: str, wait: str | None,
                     most_events: int | None = None) -> Case:
        events = min(self.options.total_events, most_events or self.options.total_events)
        batch, connections = client_case.batch, client_case.connections
        return Case(client_case.name, "http", batch, sink, shape,
                    min(case_events("http", batch, events, connections), events),
                    min(connections, self.options.clients or default_clients("http", batch, connections)),
                    connections, 1, wait, one_in_flight=True)

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
            self._open_clickhouse()
            self._run_all(target, baseline_names)
        finally:
            if target is not None:
                target.stop()
            if self.clickhouse is not None:
                self.clickhouse.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return {
            "command": o.command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "settings": self._settings(),
            "server": self.server_info,
            "clickhouse": self.clickhouse_info,
            "cases": self.cases,
            "baselines": self.baselines,
            "notes": self.notes,
            "machine": {**machine.machine(), "load_average_before": load_before, "load_average_after": machine.load_average()},
            "versions": machine.versions(),
        }

    def _open_clickhouse(self) -> None:
        """ClickHouse for its cases: the one at --clickhouse, or one started here
        when clickhouse-server is on PATH; without it, a note and no such cases."""
        o = self.options
        if o.no_clickhouse or not self.planned_clickhouse_cases():
            return
        if o.clickhouse:
            self.clickhouse = clickhouse.ClickHouse.connect(o.clickhouse)
            where = o.clickhouse
        elif not clickhouse.installed():
            self.notes.append(f"{clickhouse.SERVER_BINARY} not on PATH: no ClickHouse baseline (install it, or give "
                              "--clickhouse URL)")
            return
        else:
            try:
                self.clickhouse = clickhouse.ClickHouse.start(self.workdir / "clickhouse")
            except BenchError as exc:
                self.notes.append(f"{exc}: no ClickHouse baseline")
                return
            where = f"started here on 127.0.0.1:{self.clickhouse.http_port}"
        self.clickhouse_info = {"where": where, "version": self.clickhouse.version(), "shape": clickhouse.SHAPE,
                                "buffer": f"Buffer(…, {clickhouse.BUFFER_FLUSH})",
                                "row_insert_events": clickhouse.ROW_INSERT_EVENTS}

    def _run_all(self, target: TargetServer | None, baseline_names: list[str]) -> None:
        o = self.options
        sinks = (target.sink,) if target else o.sinks
        plan = [(shape, self.planned_cases(shape, sinks)) for shape in o.shapes]
        if self.clickhouse is not None:  # once, on the flat corpus: with the flat shape's cases, or after the first's
            ride = o.shapes.index(clickhouse.SHAPE) if clickhouse.SHAPE in o.shapes else 0
            plan[ride] = (plan[ride][0], plan[ride][1] + self.planned_clickhouse_cases())
        steps = sum(1 + len(cases) * o.repeats + len(baseline_names) for _, cases in plan)
        with tqdm(total=steps, file=sys.stderr, unit="step", disable=None if o.progress is None else not o.progress,
                  bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]") as progress:
            for shape, cases in plan:
                progress.set_description(f"corpus {shape} ({o.total_events:,} events)")
                corpora = {shape: Corpus.generate(shape, o.total_events, o.seed, self.workdir)}
                progress.update()
                for case in cases:
                    if case.shape not in corpora:  # ClickHouse's flat twin of a nested corpus
                        corpora[case.shape] = Corpus.generate(case.shape, o.total_events, o.seed, self.workdir)
                    runs = []
                    for attempt in range(o.repeats):
                        progress.set_description(f"{case.name} {case.sink} {case.shape}"
                                                 + (f" #{attempt + 1}" if o.repeats > 1 else ""))
                        runs.append(self._run_case_safely(case, corpora[case.shape], target))
                        progress.update()
                    self.cases.append(median_run(runs))
                self._run_baselines(corpora[shape], baseline_names, progress)
                for corpus in corpora.values():
                    corpus.path.unlink()

    def _settings(self) -> dict:
        o = self.options
        return {
            "quick": o.quick, "events": o.total_events, "seed": o.seed, "shapes": list(o.shapes),
            "target": o.target, "server_flags": None if o.target else self._server_flags(),
            "poll_interval_seconds": POLL_INTERVAL, "repeats": o.repeats, "http_wait": o.http_wait,
            "clickhouse": o.clickhouse, "no_clickhouse": o.no_clickhouse,
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
        record = {"case": case.name, "server": case.server, "transport": case.transport, "batch": case.batch,
                  "sink": case.sink, "shape": case.shape, "events": case.events, "clients": case.clients,
                  "connections": case.connections if case.transport == "http" else None,
                  "pipeline": case.pipeline if case.transport == "http" else None,
                  "wait": case.wait, "one_in_flight": case.one_in_flight, "error": None}
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
        if case.server == "clickhouse":
            table = f"bench_{case.name.replace('-', '_')}_{self.run_id}"
            try:
                return LoadRun(case, corpus, self.clickhouse, table, directory, self.options).run()
            finally:
                self.clickhouse.drop_tables(table)
                shutil.rmtree(directory, ignore_errors=True)
        server = target
        if target is None:
            table = f"{case.transport}_{case.batch}"
            server = ServerUnderTest(directory / "data", case.sink, table if case.transport == "tcp" else "events",
                                     self._server_flags(), directory / "server.log")
            self.server_info.setdefault("hot_path", server.stats.document().get("hot_path"))
        else:
            table = target.tcp_table if case.transport == "tcp" else f"bench_{case.name.replace('-', '_')}_{self.run_id}"
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
                elif name == "import":
                    figures = imports.import_figures(corpus.data, corpus.events, self.options.sinks, quick, directory)
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
    """One case against one server: start the clients, watch the table land.

    Against ClickHouse (`server` a ClickHouse, `table` the name for the case's
    tables), landed means: MergeTree, acknowledged (the part is written when
    the INSERT is answered); Buffer, counted by SELECT count() of the Buffer
    table, polled as ingest's stats are (the count includes rows still in
    memory: they reach the MergeTree table under it within its max_time)."""

    def __init__(self, case: Case, corpus: Corpus, server, table: str, directory: Path, options: BenchOptions):
        self.case, self.corpus, self.server, self.table = case, corpus, server, table
        self.directory, self.timeout = directory, options.timeout
        self.clients: list[subprocess.Popen] = []
        self.insert_table = table  # ClickHouse's: made in run(), a Buffer table in front of `table` or `table`

    def run(self) -> dict:
        server, on_clickhouse = self.server, self.case.server == "clickhouse"
        if on_clickhouse:
            self.insert_table = server.create_table(self.table, self.case.sink.removeprefix("clickhouse-"))
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
            before = {} if on_clickhouse else server.stats.table(self.table)
            probe = server.probe
            peak_reset = probe.reset_peak_rss() if probe else False
            cpu_before = probe.cpu_seconds() if probe else None
            for client in self.clients:
                client.stdin.write("go\n")
                client.stdin.flush()
            if self.case.sink == "clickhouse-mergetree":
                results = self._client_results(specs, self.timeout)
                landed_curve = acked_curve(results)
                counters = self._clickhouse_counters()
            elif on_clickhouse:
                landed_curve, counters = self._watch_landing(self._clickhouse_counters, lambda c: c["landed"])
                results = self._client_results(specs)
            else:
                landed_curve, counters = self._watch_landing(lambda: server.stats.table(self.table),
                                                             lambda c: settled(c) - settled(before))
                results = self._client_results(specs)
                counters = changes(before, counters)
            cpu_after = probe.cpu_seconds() if probe else None
            peak = probe.peak_rss_bytes() if probe else None
        finally:
            for client in self.clients:
                if client.poll() is None:
                    client.kill()
                    client.wait()
        cpu_seconds = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        return self._figures(results, landed_curve, counters, cpu_seconds, peak, peak_reset)

    def _clickhouse_counters(self) -> dict:
        """ClickHouse's rows in the case's table, as ingest's counters."""
        return {"landed": self.server.count(self.insert_table), "rejected": 0, "dead_lettered": 0, "retries": 0,
                "batches_sealed": {}}

    def _request_target(self) -> str:
        case = self.case
        if case.transport == "tcp":
            return ""
        if case.server == "clickhouse":
            return self.server.insert_path(self.insert_table)
        return f"/v1/ingest/{self.table}" + (f"?wait={case.wait}" if case.wait else "")

    def _client_specs(self) -> list[ClientSpec]:
        """The case's events split evenly among its client processes, and its
        connections too (each process drives its share from one selector)."""
        case, server, corpus = self.case, self.server, self.corpus
        port = server.tcp_port if case.transport == "tcp" else server.http_port
        requests = -(-case.events // case.batch)
        connections = max(1, min(case.connections, requests))
        clients = max(1, min(case.clients, connections))
        bounds = [case.events * k // clients for k in range(clients + 1)]
        path = self._request_target()
        return [
            ClientSpec(case.transport, server.host, port, path, str(corpus.path),
                       corpus.offset(bounds[k]), corpus.offset(bounds[k + 1]), case.batch,
                       connections * (k + 1) // clients - connections * k // clients, case.pipeline,
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

    def _watch_landing(self, read_counters, settled_of) -> tuple[list[tuple[float, int]], dict]:
        """(time, events settled) until all of the case's events have, polled
        every POLL_INTERVAL; the time is taken after the answer (conservative)."""
        events = self.case.events
        deadline = time.monotonic() + self.timeout
        curve = []
        while True:
            counters = read_counters()
            now = time.monotonic()
            done = settled_of(counters)
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

    def _client_results(self, specs: list[ClientSpec], timeout: float = 60) -> list[dict]:
        results = []
        for client, spec in zip(self.clients, specs):
            try:
                client.wait(timeout)
            except subprocess.TimeoutExpired:
                raise BenchError(f"{self.case.name}: a client did not finish within {timeout:.0f} s") from None
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
        errors = [r["first_error"] for r in results if r["first_error"]]
        if counters["landed"] + counters["rejected"] + counters["dead_lettered"] < case.events:  # ClickHouse's count
            raise BenchError(f"{case.name}: only {counters['landed']:,} of {case.events:,} events in "
                             f"{self.insert_table}" + (f"; first error: {errors[0]}" if errors else ""))
        seconds = landed_at - first_send
        nbytes = sum(r["bytes"] for r in results)
        requests = sum(r["requests"] for r in results)
        statuses: dict[str, int] = {}
        for r in results:
            for status, count in r["statuses"].items():
                statuses[str(status)] = statuses.get(str(status), 0) + count
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


def acked_curve(results: list[dict]) -> list[tuple[float, int]]:
    """(time, events acknowledged so far) over all clients: what landed
    means where an answer says the rows are written (ClickHouse MergeTree)."""
    points = sorted(tuple(point) for result in results for point in result["acked_curve"])
    return [(when, int(total)) for (when, _), total in zip(points, np.cumsum([n for _, n in points]))]


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
