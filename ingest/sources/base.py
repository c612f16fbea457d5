"""What sources are given instead of the whole server: the narrow set of
things taking in events needs, and what the admin endpoints read."""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable

from ingest.sources.auth import Tokens
from ingest.sources.sdk import SourceSettings, source_settings

if TYPE_CHECKING:
    from ingest.core.budget import MemoryBudget
    from ingest.core.health import SinkHealth
    from ingest.core.pipeline import TablePipeline
    from ingest.core.receipts import IdempotencyKeys, ReceiptBook
    from ingest.durability.wal import WriteAheadLog
    from ingest.server.webhooks import Webhooks


@dataclass(frozen=True)
class IntakeContext:
    pipeline: Callable[[str], TablePipeline]  # a table's pipeline, created on first use
    budget: MemoryBudget
    wal: WriteAheadLog | None  # None when the server runs with --wal off
    sink_health: SinkHealth
    receipts: ReceiptBook
    idempotency: IdempotencyKeys
    webhooks: Webhooks
    draining: Callable[[], bool]  # true once shutdown has begun: intake is refused
    max_body_bytes: int
    max_line_bytes: int
    observe_http: Callable[[str, int], None]  # counts an HTTP answer by route template and status
    parse_pool: Executor | None = None  # where large bodies are decoded, beside the loop; None: on the loop
    # counts a refusal in /metrics by reason and token name (see Metrics.observe_refusal)
    observe_refusal: Callable[[str, str], None] = lambda reason, token="": None
    tokens: Tokens = field(default_factory=Tokens)  # who may call what; no tokens: no auth
    sources: dict[str, SourceSettings] = field(default_factory=source_settings)  # SDK source -> tables, limits

    def refusal(self) -> str | None:
        """Why no request can be taken in right now (and should be retried
        later), or None. Checked before a body is read."""
        if self.draining():
            return "the server is shutting down; send to another instance or retry later"
        if self.wal is not None and self.wal.unavailable:
            return "the write-ahead log cannot be written (is the disk full?); retry later"
        if self.sink_health.failing:
            return f"the sink is failing ({self.sink_health.error}); retry later"
        return None


@dataclass(frozen=True)
class AdminContext:
    stats: Callable[[], dict]  # per-table counters and server state, as /v1/stats shows them
    metrics: Callable[[], bytes]  # Prometheus text
    query: Callable[[str], Awaitable[bytes]]  # SQL -> an Arrow IPC stream; raises QueryInterrupted
    receipts: ReceiptBook
    draining: Callable[[], bool]
    sink_health: SinkHealth
    sink_name: str
    tables_in: Callable[[str], set] = lambda sql: set()  # the tables a query names; ValueError if unparsable
