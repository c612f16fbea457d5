"""The ingest server: the composition root. It builds the sink, the
write-ahead log, the pools and the core (router, pipelines, receipts,
budget), runs recovery, starts the sources, and owns the start and stop
order, the signals and the choice of event loop.

Start-up order: sink, pools, recovery, listeners, then the state file and
the ``ingest: listening`` line that tools and tests parse. Shutdown runs the
reverse: stop intake, seal and drain every table, close the sink.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from ingest.hotpath import buffer, encoder
from ingest.server.config import Settings
from ingest.server.state import DataDirInUse, DataDirLock, ServerState, remove_state, write_sink_settings, write_state
from ingest.core.budget import MemoryBudget
from ingest.core.deadletter import DeadLetterStore
from ingest.server.metrics import Metrics
from ingest.core.accounting import tables_snapshot
from ingest.core.health import SinkHealth
from ingest.core.pipeline import PipelineContext, RetryPolicy, TablePipeline
from ingest.core.receipts import IdempotencyKeys, ReceiptBook
from ingest.core.router import Router
from ingest.server.webhooks import Webhooks
from ingest.core.ports import QueryInterrupted, QueryTimedOut
from ingest.sinks.sql import RunningQuery, check_read_only, referenced_tables
from ingest.durability.node import NodeIdMismatch
from ingest.sinks.registry import SINKS, SinkUnavailable, open_sink
from ingest.durability.recovery import Recovery
from ingest.durability.wal import WriteAheadLog
from ingest.sources.base import AdminContext, IntakeContext
from ingest.sources.sdk import source_settings
from ingest.sources.connection_cap import ConnectionCap
from ingest.sources.http import HttpIngestProtocol, http_router
from ingest.sources.http.connection import REFUSALS, ConnectionSweep, HttpLimits
from ingest.sources.http.responses import RETRY_LATER, HttpError, error_reply, render
from ingest.sources.tcp import TcpIngestProtocol
from ingest.sources.tls import HANDSHAKE_TIMEOUT, TlsError, quiet_handshake_failures, server_context

log = logging.getLogger("ingest.server")


EVENT_LOOP = os.environ.get("INGEST_EVENT_LOOP", "uvloop")  # asyncio: run on stock asyncio instead


def yield_to_intake() -> None:
    """Runs in each query thread as it starts: under SCHED_IDLE a query gets
    only the CPU nothing else wants, so a long one never slows intake (on a
    saturated machine it waits, and --query-timeout ends it). DuckDB runs
    each query on its calling thread (threads = 1), so this covers all of it."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):  # not Linux, or not allowed: the query runs at intake's priority
        pass


class StartupError(Exception):
    """The server cannot start for a reason the operator can fix; one line."""


class IngestServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tcp_port: int | None = None
        self.http_port: int | None = None
        self.router: Router | None = None
        self.budget = MemoryBudget(settings.max_buffer_bytes)
        self.dead_letters = DeadLetterStore(settings.deadletter_dir)
        self.metrics = Metrics(self)
        self.draining = False
        self.sink_health = SinkHealth()  # failing while the sink's environment is (a full disk, ...)
        self.wal: WriteAheadLog | None = None
        self.replayed_events = 0
        self.receipts = ReceiptBook(settings.receipt_retention)
        self.idempotency = IdempotencyKeys(settings.idempotency_window)
        self.webhooks = Webhooks(settings.webhook_secret, settings.webhook_allow.split(","),
                                 settings.data_dir / "webhooks" / "failed.ndjson")
        self._listeners: list[asyncio.AbstractServer] = []
        self._tcp_connections: set = set()
        self._http_connections: set = set()
        self._stop_requested = asyncio.Event()
        self._sweep = ConnectionSweep(self._http_connections)  # HTTP timeouts, once a second
        self.queries: dict[RunningQuery, asyncio.Future] = {}  # running queries -> their worker's future

    async def start(self, replay_only: bool = False) -> None:
        """Locks the data directory, opens the sink and the log, replays the
        log, then listens; with `replay_only`, stops after the replay."""
        self.loop = asyncio.get_running_loop()
        settings = self.settings
        self._check_exposure()
        try:
            self._lock = DataDirLock(settings.data_dir).acquire("this server")  # creates the directory too
        except DataDirInUse as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot create or lock the data directory {settings.data_dir}: {exc.strerror}") from None
        try:
            self._tls = server_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        except TlsError as exc:
            raise StartupError(str(exc)) from None
        if self._tls is not None:
            quiet_handshake_failures(self.loop)
        try:
            self.sink = open_sink(settings)
        except (NodeIdMismatch, SinkUnavailable) as exc:
            raise StartupError(str(exc)) from None
        try:
            write_sink_settings(settings.data_dir, {
                "sink": settings.sink, "partition_by": settings.partition_by, "delta_endpoint": settings.delta_endpoint,
                **({"delta_uri": settings.delta_root} if settings.sink == "delta" else {})})
        except OSError as exc:
            log.warning("cannot write the sink settings into %s (%s): offline tools will need them as flags",
                        settings.data_dir, exc)
        if settings.wal == "on":
            self.wal = WriteAheadLog(settings.wal_dir, settings.wal_fsync, settings.wal_fsync_interval,
                                     settings.wal_segment_bytes)
        cores = os.cpu_count() or 2
        writers = 1 if SINKS[settings.sink].single_writer else settings.max_flushes_in_flight
        self._pools = [
            ThreadPoolExecutor(cores, thread_name_prefix="encode"),
            ThreadPoolExecutor(writers, thread_name_prefix="sink"),
            ThreadPoolExecutor(1, thread_name_prefix="deadletter"),
            ThreadPoolExecutor(2, thread_name_prefix="query", initializer=yield_to_intake),
            ThreadPoolExecutor(cores, thread_name_prefix="parse"),  # large HTTP bodies, apart from batch encodes
        ]
        self._context = PipelineContext(
            sink=self.sink,
            encode_pool=self._pools[0],
            sink_pool=self._pools[1],
            store_pool=self._pools[2],
            sink_slots=asyncio.Semaphore(writers),
            budget=self.budget,
            dead_letters=self.dead_letters,
            retry=RetryPolicy(settings.retry_attempts, settings.retry_base_ms / 1000, settings.retry_max_ms / 1000,
                              settings.retry_timeout),
            batch_events=settings.batch_events,
            batch_bytes=settings.batch_bytes,
            flush_interval=settings.flush_interval / 1000,
            observe_flush=self.metrics.observe_flush,
            wal=self.wal,
            on_receipt_settled=self._receipt_settled,
            tables=settings.tables,
            health=self.sink_health,
        )
        self.router = Router(self._context)
        self._query_pool = self._pools[3]
        if self.wal is not None:
            ledger = await self.loop.run_in_executor(self._pools[1], self.sink.ledger)
            self.replayed_events = await Recovery(
                self.wal, self.router, self.dead_letters, self._pools[2], self.budget, self.receipts,
                self.idempotency).run(ledger)
            self.wal.open(self.loop)
        if replay_only:  # `ingest wal replay`: what the log held lands, and nothing new is taken
            return
        intake = IntakeContext(
            pipeline=self.pipeline, budget=self.budget, wal=self.wal, sink_health=self.sink_health,
            receipts=self.receipts, idempotency=self.idempotency, webhooks=self.webhooks,
            draining=lambda: self.draining, max_body_bytes=settings.max_body_bytes,
            max_line_bytes=settings.max_line_bytes, observe_http=self.metrics.observe_http,
            parse_pool=self._pools[4], observe_refusal=self.metrics.observe_refusal, tokens=settings.auth,
            sources=settings.sources or source_settings())
        self.pipeline(settings.tcp_table)
        cap = ConnectionCap(settings.max_connections, (self._tcp_connections, self._http_connections),
                            self.metrics.observe_refusal, REFUSALS)
        self._warn_over_fd_limit(settings.max_connections)
        tcp = await self._listen("TCP", settings.tcp_port, cap.guard(
            lambda: TcpIngestProtocol(intake, settings.tcp_table, self._tcp_connections), "tcp connection", b""))
        router = http_router(intake, AdminContext(
            stats=self.stats, metrics=self.metrics.render, query=self.query_arrow, receipts=self.receipts,
            draining=lambda: self.draining, sink_health=self.sink_health, sink_name=self.sink.name,
            tables_in=referenced_tables))
        limits = HttpLimits(settings.max_url_bytes, settings.max_header_bytes, settings.max_headers,
                            settings.header_timeout, settings.body_timeout, settings.idle_timeout)
        too_many = render(error_reply(HttpError(
            503, f"the server has {settings.max_connections} connections open (--max-connections); retry after the "
                 "delay given, or reuse a connection", headers=RETRY_LATER)), keep_alive=False)
        http = await self._listen("HTTP", settings.http_port, cap.guard(
            lambda: HttpIngestProtocol(router, intake, self._http_connections, limits), "http connection", too_many))
        self._sweep.start()
        self._listeners = [tcp, http]
        self.tcp_port = tcp.sockets[0].getsockname()[1]
        self.http_port = http.sockets[0].getsockname()[1]
        self.webhooks.own_endpoints.add((settings.host.lower().strip("[]"), self.http_port))
        try:
            write_state(settings.data_dir, ServerState(os.getpid(), settings.host, self.sink.name,
                                                       self.tcp_port, self.http_port, self._tls is not None))
        except OSError as exc:
            log.warning("cannot write %s (%s): `ingest query` will not find this server", settings.state_path, exc)
        log.info("hot path: buffer=%s encoder=%s; sink=%s at %s", buffer.IMPLEMENTATION,
                 encoder.IMPLEMENTATION, self.sink.name, settings.data_dir)
        for sig in (signal.SIGINT, signal.SIGTERM):  # before the line that says it is up
            self.loop.add_signal_handler(sig, self.request_stop)
        print(f"ingest: listening tcp={settings.host}:{self.tcp_port} http={settings.host}:{self.http_port}"
              + (" tls=on" if self._tls is not None else ""), flush=True)

    def _check_exposure(self) -> None:
        """Listening beyond loopback with no tokens lets anyone write and
        query: refused unless the operator says so."""
        settings = self.settings
        if settings.auth.enabled and settings.tls_client_ca is None:
            log.warning("tokens are configured but not --tls-client-ca: TCP senders cannot show one (a client "
                        "certificate names its token), so every TCP connection will be refused; send over HTTP")
        if settings.loopback_only or settings.auth.enabled:
            return
        if not settings.allow_unauthenticated:
            raise StartupError(f"--host {settings.host} listens beyond loopback but no [[auth.tokens]] are configured "
                               "(--config): anyone who reaches the ports could write and query; configure tokens, or "
                               "pass --allow-unauthenticated if a proxy or firewall guards it")
        log.warning("listening on %s with no tokens (--allow-unauthenticated): anyone who reaches the ports may "
                    "write and query", settings.host)

    @staticmethod
    def _warn_over_fd_limit(max_connections: int) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and max_connections > soft:
            log.warning("--max-connections %d is above this process's open-file limit of %d (ulimit -n): connections "
                        "past it fail at accept instead of getting a 503; raise the limit or lower --max-connections",
                        max_connections, soft)

    async def _listen(self, what: str, port: int, protocol) -> asyncio.AbstractServer:
        try:
            tls = {"ssl": self._tls, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT} if self._tls is not None else {}
            return await self.loop.create_server(protocol, self.settings.host, port, reuse_address=True, **tls)
        except OSError as exc:
            raise StartupError(f"cannot listen for {what} on {self.settings.host}:{port}: {exc.strerror or exc}"
                               f" (is another server running? choose another --{what.lower()}-port)") from None

    def _receipt_settled(self, receipt) -> None:
        if receipt.callback:
            self.webhooks.notify(receipt.callback, receipt.as_dict())

    @property
    def sink_pool(self):
        """Where the sink is called (`ingest import` reads its ledger there)."""
        return self._context.sink_pool

    @property
    def pipelines(self) -> dict[str, TablePipeline]:
        return self.router.pipelines if self.router is not None else {}

    def pipeline(self, table: str) -> TablePipeline:
        return self.router.pipeline(table)

    @property
    def inputs_paused(self) -> int:
        """TCP connections paused by the memory budget or a failing sink."""
        return self.budget.paused_inputs + self.sink_health.paused_inputs

    def stats(self) -> dict:
        return {
            "hot_path": {"buffer": buffer.IMPLEMENTATION, "encoder": encoder.IMPLEMENTATION},
            "sink": self.sink.name,
            "draining": self.draining,
            "buffer_bytes": self.budget.used,
            "buffer_limit_bytes": self.budget.limit,
            "inputs_paused": self.inputs_paused,
            "sink_health": self.sink_health.as_dict(),
            "tables": tables_snapshot(self.pipelines),
        }

    async def query_arrow(self, sql: str) -> bytes:
        """Runs SQL against the sink off the loop; the result as an Arrow IPC
        stream. A query is interrupted when the server stops or when the
        awaiting task is cancelled (its client went away)."""
        if self.draining:
            raise QueryInterrupted("the server is shutting down")
        check_read_only(sql)  # QueryRefused: not a read
        running = RunningQuery()

        def run() -> bytes:
            table = self.sink.query(sql, running, self.settings.max_query_bytes)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return sink.getvalue().to_pybytes()
        done = self.queries[running] = self.loop.run_in_executor(self._query_pool, run)
        done.add_done_callback(lambda _: self.queries.pop(running, None))
        expired = f"it ran past --query-timeout ({self.settings.query_timeout}s)"
        timer = self.loop.call_later(self.settings.query_timeout, lambda: asyncio.ensure_future(
            self._interrupt(running, done, expired)))
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            asyncio.ensure_future(self._interrupt(running, done, "its client went away"))
            raise
        except QueryInterrupted as exc:
            if running.reason == expired:  # the first reason given is the one kept
                raise QueryTimedOut(str(exc)) from None
            raise
        finally:
            timer.cancel()

    @staticmethod
    async def _interrupt(running: RunningQuery, done: asyncio.Future, reason: str) -> None:
        """Interrupts a query until it has ended (DuckDB drops an interrupt
        that comes before the query starts)."""
        while not done.done():
            running.interrupt(reason)
            await asyncio.wait([done], timeout=0.05)
        if not done.cancelled() and isinstance(done.exception(), QueryInterrupted):
            log.info("query interrupted: %s", reason)

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def serve_until_stopped(self) -> None:
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop intake, drain every table within the grace period, dead-letter
        what is left after it, close the sink. HTTP stays up meanwhile,
        answering 503 to ingest and /ready so clients go elsewhere."""
        self.draining = True
        grace = self.settings.shutdown_grace
        deadline = self.loop.time() + grace
        log.info("stopping: intake closed, draining %d table(s) within %ds", len(self.pipelines), grace)
        # queries would hold the sink (and its close) and the query threads
        await asyncio.gather(*(self._interrupt(running, done, "the server is shutting down")
                               for running, done in list(self.queries.items())))
        for listener in self._listeners[:1]:  # TCP: no new connections
            listener.close()
        for connection in list(self._tcp_connections):
            connection.close()
        drains = [asyncio.ensure_future(p.drain()) for p in self.pipelines.values()]
        if drains:
            _, late = await asyncio.wait(drains, timeout=max(0, deadline - self.loop.time()))
            if late:
                log.warning("shutdown grace of %ds expired; dead-lettering what has not landed", grace)
                for pipeline in self.pipelines.values():
                    pipeline.abandon()
                await asyncio.wait(drains)
        await self.webhooks.close(deadline - self.loop.time())
        for listener in self._listeners[1:]:
            listener.close()
        self._sweep.stop()
        for connection in list(self._http_connections):
            connection.transport.close()
        for pipeline in self.pipelines.values():
            await pipeline.close()
        await self.loop.run_in_executor(self._context.sink_pool, self.sink.close)
        if self.wal is not None:
            self.wal.close()
        for pool in self._pools:
            pool.shutdown(wait=True)
        remove_state(self.settings.data_dir)
        self._lock.release()
        log.info("stopped; per table: %s", json.dumps(self.stats()["tables"]))


async def _serve(settings: Settings, replay_only: bool) -> int:
    server = IngestServer(settings)
    await server.start(replay_only)
    if replay_only:
        server.request_stop()
    await server.serve_until_stopped()
    return server.replayed_events


def run(settings: Settings, replay_only: bool = False) -> int:
    """Serves until SIGTERM or SIGINT; with `replay_only`, lands what the
    write-ahead log holds and returns the events it replayed."""
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop
    except ImportError:  # plain asyncio where uvloop is not available
        uvloop = None
    loop_factory = None if uvloop is None or EVENT_LOOP == "asyncio" else uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(settings, replay_only))
