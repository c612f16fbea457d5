"""The ingest server: sources on the event loop, a pipeline per table, one sink.

Start-up order: sink, pools, listeners, then the state file and the
``ingest: listening`` line that tools and tests parse. Shutdown runs the
reverse: stop intake, seal and drain every table, close the sink.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from ingest import buffer, encoder
from ingest._select import EVENT_LOOP
from ingest.config import Settings
from ingest.pipeline import TablePipeline
from ingest.rejections import RejectionLog
from ingest.sinks import DuckDBSink, ParquetSink
from ingest.sources.http import HttpIngestProtocol
from ingest.sources.tcp import TcpIngestProtocol

log = logging.getLogger("ingest.server")


def open_sink(settings: Settings):
    if settings.sink == "parquet":
        return ParquetSink(settings.parquet_dir)
    return DuckDBSink(settings.duckdb_path)


class IngestServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tcp_port: int | None = None
        self.http_port: int | None = None
        self._pipelines: dict[str, TablePipeline] = {}
        self._listeners: list[asyncio.AbstractServer] = []
        self._tcp_connections: set = set()
        self._http_connections: set = set()
        self._stopped = asyncio.Event()
        self.rejections = RejectionLog(settings.data_dir / "deadletter")

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.sink = open_sink(settings)
        cores = os.cpu_count() or 2
        self._encode_pool = ThreadPoolExecutor(cores, thread_name_prefix="encode")
        # DuckDB has one writer connection; Parquet files are independent.
        self._sink_pool = ThreadPoolExecutor(1 if self.sink.name == "duckdb" else cores, thread_name_prefix="sink")
        self._query_pool = ThreadPoolExecutor(2, thread_name_prefix="query")
        self.pipeline(settings.tcp_table)
        tcp = await self.loop.create_server(
            lambda: TcpIngestProtocol(self.pipeline(settings.tcp_table), settings.max_line_bytes, self._tcp_connections),
            settings.host, settings.tcp_port, reuse_address=True,
        )
        http = await self.loop.create_server(
            lambda: HttpIngestProtocol(self, self._http_connections),
            settings.host, settings.http_port, reuse_address=True,
        )
        self._listeners = [tcp, http]
        self.tcp_port = tcp.sockets[0].getsockname()[1]
        self.http_port = http.sockets[0].getsockname()[1]
        settings.state_path.write_text(json.dumps({
            "pid": os.getpid(), "host": settings.host, "sink": self.sink.name,
            "tcp_port": self.tcp_port, "http_port": self.http_port,
        }))
        log.info("hot path: buffer=%s encoder=%s; sink=%s at %s", buffer.IMPLEMENTATION,
                 encoder.IMPLEMENTATION, self.sink.name, settings.data_dir)
        print(f"ingest: listening tcp={settings.host}:{self.tcp_port} http={settings.host}:{self.http_port}", flush=True)

    def pipeline(self, table: str) -> TablePipeline:
        pipeline = self._pipelines.get(table)
        if pipeline is None:
            pipeline = self._pipelines[table] = TablePipeline(
                table, self.sink,
                batch_events=self.settings.batch_events,
                batch_bytes=self.settings.batch_bytes,
                flush_interval_ms=self.settings.flush_interval,
                encode_pool=self._encode_pool,
                sink_pool=self._sink_pool,
                rejections=self.rejections,
            )
        return pipeline

    def stats(self) -> dict:
        return {
            "hot_path": {"buffer": buffer.IMPLEMENTATION, "encoder": encoder.IMPLEMENTATION},
            "sink": self.sink.name,
            "tables": {name: p.counters.as_dict(p.buffered) for name, p in sorted(self._pipelines.items())},
        }

    async def query_arrow(self, sql: str) -> bytes:
        """Runs SQL against the sink off the loop; the result as an Arrow IPC stream."""
        def run() -> bytes:
            table = self.sink.query(sql)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return sink.getvalue().to_pybytes()
        return await self.loop.run_in_executor(self._query_pool, run)

    def request_stop(self) -> None:
        self._stopped.set()

    async def serve_until_stopped(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.request_stop)
        await self._stopped.wait()
        await self.stop()

    async def stop(self) -> None:
        log.info("stopping: closing listeners, draining %d table(s)", len(self._pipelines))
        for listener in self._listeners:
            listener.close()
        for connection in list(self._tcp_connections):
            connection.close()
        for connection in list(self._http_connections):
            connection.transport.close()
        for pipeline in list(self._pipelines.values()):
            await pipeline.drain()
        for pipeline in self._pipelines.values():
            await pipeline.close()
        await self.loop.run_in_executor(self._sink_pool, self.sink.close)
        for pool in (self._encode_pool, self._sink_pool, self._query_pool):
            pool.shutdown(wait=True)
        self.rejections.close()
        self.settings.state_path.unlink(missing_ok=True)
        totals = {name: p.counters.as_dict(p.buffered) for name, p in self._pipelines.items()}
        log.info("stopped; per table: %s", json.dumps(totals))


async def _serve(settings: Settings) -> None:
    server = IngestServer(settings)
    await server.start()
    await server.serve_until_stopped()


def run(settings: Settings) -> None:
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
        runner.run(_serve(settings))
