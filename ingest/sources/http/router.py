"""(method, path template) -> handler. Each API module contributes a list of
Routes; the connection asks the router which one a request is for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, NamedTuple

from ingest.sources.auth import Token
from ingest.sources.http.responses import HttpError, Reply

OTHER = "other"  # the route label of a path no route serves


class Request(NamedTuple):  # one per request: a tuple is the cheapest record to build
    method: str
    path: str
    params: dict  # the path template's placeholders, e.g. {"table": "events"}
    query: bytes | None
    headers: dict  # lower-cased names
    body: bytes
    peer: str
    token: Token | None = None  # the caller's token, when the server has tokens configured


Handler = Callable[[Request], "Reply | Awaitable[Reply]"]


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/v1/ingest/{table}": a trailing {name} takes the rest of the path
    handler: Handler
    # asked once the headers are in, before the body is read: an HttpError refuses the request, its body discarded
    admit: Callable[[], HttpError | None] | None = None
    budgeted: bool = False  # the body counts against the memory budget while it is read
    cancel_on_disconnect: bool = False  # the answer is abandoned when its client goes away (a query)
    # once tokens are configured: the scopes that may call it (admin always may); () means open to all
    scopes: tuple = ("admin",)
    probe: bool = False  # a liveness or readiness probe: open to all under auth.open_probes = true
    table_param: str | None = None  # the placeholder naming the table, checked against the token's list

    @property
    def prefix(self) -> str | None:
        """The fixed part of a template that ends in a placeholder."""
        head, brace, tail = self.template.partition("{")
        return head if brace and tail.endswith("}") and "/" not in tail else None


class Match(NamedTuple):
    template: str  # the route template, or "other": the request's metric label
    route: Route | None
    params: dict
    error: HttpError | None  # 404 or 405 when no route serves the method and path


class Router:
    def __init__(self, routes: Iterable[Route], not_found_hint: str):
        self._exact: dict[str, dict[str, Route]] = {}
        self._prefixed: list[tuple[str, str, dict[str, Route]]] = []  # (prefix, placeholder, method -> route)
        self._hint = not_found_hint
        for route in routes:
            prefix = route.prefix
            if prefix is None and "{" in route.template:
                raise ValueError(f"{route.template}: only a trailing {{name}} placeholder is supported")
            if prefix is None:
                methods = self._exact.setdefault(route.template, {})
            else:
                methods = next((m for p, _, m in self._prefixed if p == prefix), None)
                if methods is None:
                    methods = {}
                    self._prefixed.append((prefix, route.template[len(prefix) + 1:-1], methods))
            if route.method in methods:
                raise ValueError(f"two routes for {route.method} {route.template}")
            methods[route.method] = route

    def _lookup(self, path: str) -> tuple[str, dict[str, Route], dict] | None:
        """(template, method -> route, placeholders) for a path, or None."""
        methods = self._exact.get(path)
        if methods is not None:
            return path, methods, {}
        for prefix, name, methods in self._prefixed:
            if path.startswith(prefix):
                return next(iter(methods.values())).template, methods, {name: path[len(prefix):]}
        return None

    def match(self, method: str, path: str) -> Match:
        """What serves a request, looked up once when its headers are in."""
        found = self._lookup(path)
        if found is None:
            return Match(OTHER, None, {}, HttpError(404, f"no such endpoint {path!r}; {self._hint}"))
        template, methods, params = found
        route = methods.get(method)
        if route is None:
            allowed = list(methods)
            return Match(template, None, params,
                         HttpError(405, f"use {' or '.join(allowed)}", headers=(("Allow", ", ".join(allowed)),)))
        return Match(template, route, params, None)

    def template(self, path: str) -> str:
        """The route template a path falls under ("other" when none): a metric
        label that stays bounded whatever clients send."""
        found = self._lookup(path)
        return found[0] if found else OTHER

