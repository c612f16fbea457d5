"""Prometheus exposition for GET /metrics, through prometheus_client.

Counters are read from the pipelines at scrape time (one source of truth,
and the scrape runs on the event loop, so the accounting invariant holds in
every scrape); only the flush-latency histogram is recorded as it happens.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

EVENT_COUNTERS = (
    ("received", "Events accepted from a source, good or bad"),
    ("rejected", "Events refused as bad input (kept in the dead-letter store)"),
    ("landed", "Events committed in the sink"),
    ("dead_lettered", "Events that could not land (kept in the dead-letter store)"),
)


class ServerCollector:
    def __init__(self, server):
        self._server = server

    def collect(self):
        pipelines = sorted(self._server.pipelines.items())
        for name, help_text in EVENT_COUNTERS:
            family = CounterMetricFamily(f"ingest_events_{name}", help_text, labels=["table"])
            for table, pipeline in pipelines:
                family.add_metric([table], getattr(pipeline.counters, name))
            yield family
        buffered = GaugeMetricFamily("ingest_events_buffered", "Events received but not yet landed, rejected or dead-lettered", labels=["table"])
        retries = CounterMetricFamily("ingest_flush_retries", "Flush attempts after a failure", labels=["table"])
        sealed = CounterMetricFamily("ingest_batches_sealed", "Batches sealed, by trigger", labels=["table", "trigger"])
        for table, pipeline in pipelines:
            buffered.add_metric([table], pipeline.buffered)
            retries.add_metric([table], pipeline.counters.retries)
            for trigger, count in pipeline.counters.batches_sealed.items():
                sealed.add_metric([table, trigger], count)
        yield buffered
        yield retries
        yield sealed
        budget = self._server.budget
        yield GaugeMetricFamily("ingest_buffer_bytes", "Bytes held in buffered and in-flight batches", value=budget.used)
        yield GaugeMetricFamily("ingest_buffer_limit_bytes", "The memory budget (--max-buffer-bytes)", value=budget.limit)
        health = self._server.sink_health
        yield GaugeMetricFamily("ingest_inputs_paused", "TCP connections paused by backpressure or a failing sink",
                                value=self._server.inputs_paused)
        yield GaugeMetricFamily("ingest_draining", "1 while the server drains for shutdown", value=int(self._server.draining))
        yield GaugeMetricFamily("ingest_sink_failing", "1 while the sink fails on its environment (disk full, I/O, permission)",
                                value=int(health.failing))
        yield GaugeMetricFamily("ingest_sink_failing_since_seconds", "Unix time the sink began failing; 0 when healthy",
                                value=health.failing_since or 0)
        yield GaugeMetricFamily("ingest_queries_running", "Queries running against the sink", value=len(self._server.queries))
        wal = self._server.wal
        if wal is not None:
            yield GaugeMetricFamily("ingest_wal_segments", "Write-ahead-log segments on disk", value=wal.segments)
            yield CounterMetricFamily("ingest_wal_torn_tails", "Torn records truncated at start-up", value=wal.torn_tails)
            yield CounterMetricFamily("ingest_wal_corrupt_records", "Corrupt records moved to the dead-letter store",
                                      value=wal.corrupt_records)
            yield CounterMetricFamily("ingest_wal_damaged_events", "Events that corrupt records moved to the dead-letter "
                                      "store said they held (read from their damaged heads)", value=wal.damaged_events)
            yield CounterMetricFamily("ingest_wal_missing_records", "Records absent from the log at start-up (a gap in "
                                      "its sequence: a deleted or cut segment)", value=wal.missing_records)
            yield CounterMetricFamily("ingest_wal_failed_appends", "Appends the log refused (a full disk)",
                                      value=wal.failed_appends)
        webhooks = self._server.webhooks
        yield CounterMetricFamily("ingest_webhooks_delivered", "Webhook notices delivered", value=webhooks.delivered)
        yield CounterMetricFamily("ingest_webhooks_failed", "Webhook notices that never went through", value=webhooks.failed)


class Metrics:
    def __init__(self, server):
        self.registry = CollectorRegistry()
        self.registry.register(ServerCollector(server))
        self._flush_seconds = Histogram(
            "ingest_flush_duration_seconds", "Time one sink write took", ["table"],
            registry=self.registry, buckets=FLUSH_BUCKETS,
        )
        self._http_requests = Counter(
            "ingest_http_requests", "HTTP answers, by route template and status", ["route", "status"],
            registry=self.registry,
        )
        self._http_counters: dict[tuple[str, int], object] = {}  # bounded: route templates x statuses
        self._refusals = Counter(
            "ingest_refusals", "Requests and connections refused before intake, by reason and token name "
            "(never its secret; empty when none was given)", ["reason", "token"], registry=self.registry,
        )

    def observe_http(self, route: str, status: int) -> None:
        counter = self._http_counters.get((route, status))
        if counter is None:  # labels() takes a lock and builds its key: once per route and status
            counter = self._http_counters[route, status] = self._http_requests.labels(route, str(status))
        counter.inc()

    def observe_refusal(self, reason: str, token: str = "") -> None:
        """One refusal: `reason` a short fixed word (unauthenticated, forbidden,
        rate_limited, header_too_large, too_many_connections, ...), `token` the
        name of the token the request carried, if any."""
        self._refusals.labels(reason, token).inc()

    def observe_flush(self, table: str, seconds: float) -> None:
        self._flush_seconds.labels(table).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
