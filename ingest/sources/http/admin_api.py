"""The endpoints that read the server rather than feed it:

  GET  /v1/receipts/{id}   what became of an accepted request
  POST /v1/query           SQL in the body; answers an Arrow IPC stream
  GET  /v1/stats           per-table counters as JSON
  GET  /metrics            Prometheus text
  GET  /health             liveness: the process answers
  GET  /ready              readiness: 503 while draining for shutdown or while the sink is failing
"""
from __future__ import annotations

import re

from ingest.core.ports import QueryInterrupted, QueryRefused, QueryTimedOut
from ingest.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ingest.sources.base import AdminContext
from ingest.sources.formats.arrow import ARROW_STREAM_TYPE
from ingest.sources.http.responses import JSON_TYPE, RETRY_LATER, HttpError, Reply, json_reply
from ingest.sources.http.router import Request, Route

RECEIPTS_PREFIX = "/v1/receipts/"
TABLE_BY_STRING = re.compile(r"\b(?:query_table|query)\s*\(", re.IGNORECASE)  # table functions taking a table name


def routes(admin: AdminContext) -> list[Route]:
    api = AdminApi(admin)
    return [
        Route("GET", RECEIPTS_PREFIX + "{id}", api.receipt, scopes=("write", "query")),
        Route("GET", "/health", api.health, scopes=()),
        Route("GET", "/ready", api.ready, probe=True),
        Route("GET", "/metrics", api.metrics, probe=True),
        Route("GET", "/v1/stats", api.stats),
        Route("POST", "/v1/query", api.query, cancel_on_disconnect=True, scopes=("query",)),
    ]


class AdminApi:
    def __init__(self, admin: AdminContext):
        self._admin = admin

    def receipt(self, request: Request) -> Reply:
        receipt = self._admin.receipts.get(request.params["id"])
        if receipt is not None and request.token is not None and not request.token.may_use(receipt.table):
            receipt = None  # another table's receipt: not this token's to see, nor to know of
        if receipt is None:
            raise HttpError(404, "no such receipt: unknown, or older than --receipt-retention")
        return json_reply(200, receipt.as_dict())

    @staticmethod
    def health(request: Request) -> Reply:
        return Reply(200, b'{"status":"ok"}', JSON_TYPE)

    def ready(self, request: Request) -> Reply:
        if self._admin.draining():
            return Reply(503, b'{"status":"draining"}', JSON_TYPE)
        health = self._admin.sink_health
        if health.failing:
            return json_reply(503, {"status": "sink failing", "sink": self._admin.sink_name, **health.as_dict()})
        return Reply(200, b'{"status":"ready"}', JSON_TYPE)

    def metrics(self, request: Request) -> Reply:
        return Reply(200, self._admin.metrics(), METRICS_CONTENT_TYPE)

    def stats(self, request: Request) -> Reply:
        return json_reply(200, self._admin.stats())

    async def query(self, request: Request) -> Reply:
        sql = request.body.decode("utf-8", "replace").strip()
        if not sql:
            raise HttpError(400, "send the SQL text as the request body")
        token = request.token
        if token is not None and token.tables and "admin" not in token.scopes:
            if TABLE_BY_STRING.search(sql):  # the parser cannot tell which table a string names
                raise HttpError(403, f"token {token.name!r} has a table list: query_table() and query() are not "
                                     "allowed to it (it may not read tables it cannot see named); name the tables in the SQL")
            try:
                named = self._admin.tables_in(sql)
            except ValueError as exc:
                raise HttpError(400, f"query failed: {exc}") from None
            outside = sorted(t for t in named if not token.may_use(t))
            if outside:
                raise HttpError(403, f"token {token.name!r} may not read {', '.join(map(repr, outside))}")
        try:
            payload = await self._admin.query(sql)
        except QueryTimedOut as exc:
            raise HttpError(408, f"query interrupted: {exc}; make it cheaper (LIMIT, WHERE, aggregate)") from None
        except QueryInterrupted as exc:
            raise HttpError(503, f"query interrupted: {exc}", headers=RETRY_LATER) from None
        except QueryRefused as exc:
            raise HttpError(403, f"query refused: {exc}") from None
        except Exception as exc:  # a user's SQL error, reported back to them
            raise HttpError(400, f"query failed: {exc}") from None
        return Reply(200, payload, ARROW_STREAM_TYPE)
