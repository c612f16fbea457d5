"""NDJSON -> Arrow: this encoder beside the usual ways, on the same corpora.

    make bench                                             # every bench, INGEST_BENCH_EVENTS events
    INGEST_BENCH_EVENTS=1000000 .venv/bin/python -m pytest bench/test_encoder_competitors.py --benchmark-only

Two corpora of about 200-byte events from ingest.testing.corpus, the same seed:
nested (a `context` object) and flat (only scalars). Each case turns the
whole corpus into Arrow columns:

- encoder: ingest.hotpath._encoder.Encoder.encode() on one thread, inferred types
  (the lines framed beforehand, as the server frames them while receiving);
- encoder-declared: the same with a declared schema (`context` a struct);
- encoder-2-threads: two Encoders on the two halves, in a ThreadPoolExecutor
  (the GIL is released while parsing: the goal is >= 1.7x one thread);
- pyarrow-1-thread / pyarrow-threads: pyarrow.json.read_json, use_threads off / on;
- msgspec: msgspec.json.Decoder(Event).decode_lines() into Structs, then
  pa.Table.from_pydict (columns built attribute by attribute);
- orjson: orjson.loads per line, then pa.Table.from_pylist.

At the end a table of events/s and ratios is written to the terminal.
INGEST_BENCH_EVENTS sets the corpus size (default 100,000 so that `make
bench` stays quick; the issue's size is 1,000,000), INGEST_BENCH_ROUNDS the
rounds per case (default 3).
"""
from __future__ import annotations

import datetime
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.json as pa_json
import pytest

from ingest.hotpath import _buffer, _encoder
from ingest.testing import corpus
from ingest.schema import declared_schema

try:  # the competitors (test extras); their cases are skipped without them
    import msgspec
except ImportError:
    msgspec = None
try:
    import orjson
except ImportError:
    orjson = None

EVENTS = int(os.environ.get("INGEST_BENCH_EVENTS", "100000"))
ROUNDS = int(os.environ.get("INGEST_BENCH_ROUNDS", "3"))
SEED = 7
SHAPES = ("nested", "flat")
BASE = "encoder"  # the ratios in the summary are against this case


def flat_ndjson(count: int, seed: int = 0, start: int = 0) -> bytes:
    """Flat events, for an ingest.testing.corpus without its own `flat_ndjson`: the
    nested corpus's fields with `context` spread into top-level scalars."""
    lines = []
    for line in corpus.ndjson(count, seed, start).splitlines():
        event = json.loads(line)
        for key, value in event.pop("context").items():
            event[f"context_{key}"] = value
        event["path"] = event.pop("path")  # keep `path` last, as in the nested events
        lines.append(json.dumps(event, separators=(",", ":")).encode())
    return b"\n".join(lines) + b"\n"


GENERATORS = {"nested": corpus.ndjson, "flat": getattr(corpus, "flat_ndjson", flat_ndjson)}


Struct = msgspec.Struct if msgspec else object


class Context(Struct):
    plan: str
    session: str
    retries: int


class NestedEvent(Struct):
    id: int
    ts: datetime.datetime
    user_id: int
    event: str
    amount: float
    ok: bool
    country: str
    context: Context
    path: str
    coupon: str | None = None


class FlatEvent(Struct):
    id: int
    ts: datetime.datetime
    user_id: int
    event: str
    amount: float
    ok: bool
    country: str
    context_plan: str
    context_session: str
    context_retries: int
    path: str
    coupon: str | None = None


STRUCTS = {"nested": NestedEvent, "flat": FlatEvent}
DECLARED = {  # the nested corpus, declared; flat events get the scalars only
    "id": "int64", "ts": "timestamp", "user_id": "int64", "event": "string", "amount": "float64",
    "ok": "bool", "country": "string", "context": "struct<plan: string, session: string, retries: int64>",
    "coupon": "string", "path": "string",
}


@pytest.fixture(scope="module")
def corpora() -> dict[str, bytes]:
    return {shape: GENERATORS[shape](EVENTS, seed=SEED) for shape in SHAPES}


@pytest.fixture(scope="module")
def framed(corpora):
    """Each corpus as the server hands it to the encoder: data and line spans."""
    result = {}
    for shape, data in corpora.items():
        out = _buffer.BatchBuffer()
        _buffer.LineFramer().feed(data, 0, out)
        sealed = out.seal()
        assert sealed.events == EVENTS
        result[shape] = (sealed, sealed.data(), sealed.spans())
    return result


@pytest.fixture(scope="module")
def summary(pytestconfig):
    """Collects events/s per (shape, case); writes the table after the module."""
    rates: dict[tuple[str, str], float] = {}
    yield rates
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not rates:
        return
    lines = ["", f"NDJSON -> Arrow, {EVENTS:,} events per corpus, best of {ROUNDS} rounds"]
    for shape in SHAPES:
        base = rates.get((shape, BASE))
        lines.append(f"  {shape}:")
        for (s, case), rate in sorted(rates.items(), key=lambda item: -item[1]):
            if s == shape:
                ratio = f"{rate / base:5.2f}x encoder" if base else ""
                lines.append(f"    {case:22s} {rate / 1e6:7.3f} M events/s  {ratio}")
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        for line in lines:
            reporter.write_line(line)


def run(benchmark, summary, shape: str, case: str, function, rounds: int = ROUNDS):
    result = benchmark.pedantic(function, rounds=rounds, iterations=1, warmup_rounds=0)
    rate = EVENTS / benchmark.stats.stats.min
    benchmark.extra_info["events_per_second"] = round(rate)
    summary[(shape, case)] = rate
    return result


@pytest.mark.parametrize("shape", SHAPES)
def test_encoder_one_thread(benchmark, summary, framed, shape):
    _, data, spans = framed[shape]
    result = run(benchmark, summary, shape, "encoder", lambda: _encoder.Encoder("bench").encode(data, spans))
    assert result.batch.num_rows == EVENTS and not result.errors


@pytest.mark.parametrize("shape", SHAPES)
def test_encoder_declared(benchmark, summary, framed, shape):
    _, data, spans = framed[shape]
    columns = DECLARED if shape == "nested" else {k: v for k, v in DECLARED.items() if k != "context"}
    schema = declared_schema(columns)
    result = run(benchmark, summary, shape, "encoder-declared",
                 lambda: _encoder.Encoder("bench", schema=schema).encode(data, spans))
    assert result.batch.num_rows == EVENTS and not result.errors


@pytest.mark.parametrize("shape", SHAPES)
def test_encoder_two_threads(benchmark, summary, framed, shape):
    _, data, spans = framed[shape]
    middle = (EVENTS // 2) * 2  # spans hold two offsets per line
    halves = (spans[:middle], spans[middle:])
    with ThreadPoolExecutor(2) as pool:
        def encode_halves():
            futures = [pool.submit(_encoder.Encoder("bench").encode, data, half) for half in halves]
            return [future.result() for future in futures]

        results = run(benchmark, summary, shape, "encoder-2-threads", encode_halves)
    assert sum(result.batch.num_rows for result in results) == EVENTS


@pytest.mark.parametrize("threads", [False, True], ids=["1-thread", "threads"])
@pytest.mark.parametrize("shape", SHAPES)
def test_pyarrow_read_json(benchmark, summary, corpora, shape, threads):
    data = corpora[shape]
    options = pa_json.ReadOptions(use_threads=threads, block_size=1 << 24)
    table = run(benchmark, summary, shape, "pyarrow-threads" if threads else "pyarrow-1-thread",
                lambda: pa_json.read_json(io.BytesIO(data), read_options=options))
    assert table.num_rows == EVENTS


@pytest.mark.parametrize("shape", SHAPES)
def test_msgspec_to_arrow(benchmark, summary, corpora, shape):
    if msgspec is None:
        pytest.skip("msgspec is not installed")
    data = corpora[shape]
    decoder = msgspec.json.Decoder(STRUCTS[shape])
    names = STRUCTS[shape].__struct_fields__

    def convert():
        events = decoder.decode_lines(data)
        columns = {name: [getattr(event, name) for event in events] for name in names}
        if "context" in columns:
            columns["context"] = [msgspec.structs.asdict(context) for context in columns["context"]]
        return pa.Table.from_pydict(columns)

    table = run(benchmark, summary, shape, "msgspec", convert)
    assert table.num_rows == EVENTS


@pytest.mark.parametrize("shape", SHAPES)
def test_orjson_to_arrow(benchmark, summary, corpora, shape):
    if orjson is None:
        pytest.skip("orjson is not installed")
    data = corpora[shape]

    def convert():
        return pa.Table.from_pylist([orjson.loads(line) for line in data.splitlines()])

    table = run(benchmark, summary, shape, "orjson", convert, rounds=max(1, ROUNDS - 1))
    assert table.num_rows == EVENTS
