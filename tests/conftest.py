"""Shared fixtures: the real server as a subprocess on free loopback ports."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import pytest

from ingest.testing.server_process import ServerProcess, poll  # noqa: F401  (tests import poll from here)

TIERS = ("unit", "hotpath", "e2e", "soak")  # the folders under tests/, each its own marker
# The e2e modules `make check` runs too: the core cases on every variant, and the command line.
SMOKE = {"test_matrix.py", "test_cli.py"}


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).parent
    for item in items:
        if not item.path.is_relative_to(root):  # e.g. bench/ collected in the same run
            continue
        tier = item.path.relative_to(root).parts[0]
        if tier in TIERS:
            item.add_marker(tier)
        if tier == "e2e" and item.path.name in SMOKE:
            item.add_marker("smoke")


def pytest_sessionstart(session):
    # A broken build must never pass as "fast": in the normal run the compiled
    # hot path has to be what is loaded.
    from ingest.hotpath import hot_path_compiled
    from ingest.hotpath.select import PURE_PYTHON

    if not PURE_PYTHON:
        assert hot_path_compiled()


@pytest.fixture(params=["cython", "python"])
def implementation(request):
    """Runs a test on the compiled hot path and on the pure-Python reference."""
    return request.param


class Variant(NamedTuple):
    implementation: str  # the hot path: "cython" or "python" (INGEST_PURE_PYTHON)
    event_loop: str  # "uvloop" or "asyncio" (INGEST_EVENT_LOOP)


VARIANTS = [Variant(i, loop) for i in ("cython", "python") for loop in ("uvloop", "asyncio")]


@pytest.fixture(params=VARIANTS, ids=lambda v: f"{v.implementation}-{v.event_loop}")
def variant(request) -> Variant:
    """Runs a test on {compiled, pure-Python} hot path x {uvloop, asyncio}."""
    return request.param


@pytest.fixture
def start_variant_server(start_server, variant):
    """start_server with this test's variant: start_variant_server(*args, data_dir=...)."""
    return functools.partial(start_server, implementation=variant.implementation, event_loop=variant.event_loop)


@pytest.fixture
def start_server(tmp_path):
    """start_server(*args, implementation="cython", event_loop="uvloop", name="data")."""
    servers: list[ServerProcess] = []

    def start(*args, implementation="cython", event_loop="uvloop", name="data", data_dir=None, extra_env=None):
        env = dict(os.environ)
        env["INGEST_PURE_PYTHON"] = "1" if implementation == "python" else "0"
        env["INGEST_EVENT_LOOP"] = event_loop
        env.update(extra_env or {})
        server = ServerProcess(data_dir or tmp_path / name, [str(a) for a in args], env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def moto_s3(tmp_path):
    """An S3 store on loopback: moto_server in a subprocess with one bucket
    (MotoServer: endpoint, bucket, env, uri(prefix), storage_options()),
    stopped by its pid at teardown."""
    from ingest.testing.moto_server import MotoServer

    store = MotoServer(log_path=tmp_path / "moto.log")
    yield store
    store.stop()


class Lake(NamedTuple):
    """Where a test's Delta tables go, and what a server needs to write there."""
    uri: str
    args: tuple  # `ingest serve` flags beside --delta-uri
    env: dict  # beside os.environ
    storage_options: dict  # for deltalake in the test itself


@pytest.fixture(params=["file", "s3"])
def lake(request, tmp_path):
    """A Delta root on the local filesystem, then on S3 (moto)."""
    if request.param == "file":
        return Lake((tmp_path / "lake").as_uri(), (), {}, {})
    store = request.getfixturevalue("moto_s3")
    return Lake(store.uri("lake"), ("--delta-endpoint", store.endpoint), store.env, store.storage_options())
