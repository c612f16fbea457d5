"""What a user would do without ingest, timed on the same corpus in the same
run: pyarrow's JSON reader into Parquet, DuckDB's own NDJSON reader, one
DuckDB INSERT per event, and our encoder against its pure-Python twin;
`import` (imports.py) sets `ingest import` beside the first two as whole
commands on one file.

Each baseline returns a dict with at least `name`, `events`, `seconds` and
`events_per_second`; the report sets them beside ingest's own figures.
"""
from __future__ import annotations

import gc
import io
import json
import time
from functools import partial
from pathlib import Path

import duckdb
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from ingest.hotpath import buffer
from ingest.sinks.duckdb import DuckDBSink
from ingest.schema import is_json_field
from ingest.sinks.sql import duckdb_type, quote_identifier

BASELINES = ("pyarrow", "duckdb-read-ndjson", "duckdb-row-insert", "encoder", "import")
REPEATS = 3  # the parse-only and encode-only figures, single-threaded and short: best of 3


def _timed(function):
    gc.collect()
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def _best_of(repeats: int, function):
    return min((_timed(function) for _ in range(repeats)), key=lambda timed: timed[1])


def _figure(name: str, events: int, seconds: float, **details) -> dict:
    return {"name": name, "events": events, "seconds": round(seconds, 4),
            "events_per_second": round(events / seconds) if seconds > 0 else None, **details}


def _warm_up_slice(corpus: bytes, events: int = 1_000) -> bytes:
    end = 0
    for _ in range(events):
        end = corpus.find(b"\n", end) + 1
        if end == 0:
            return corpus
    return corpus[:end]


def framed(corpus: bytes):
    """The corpus as the server holds it before encoding: a sealed batch of lines."""
    lines = buffer.BatchBuffer()
    buffer.LineFramer().feed(corpus, 0, lines)
    return lines.seal()


def pyarrow_to_parquet(corpus: bytes, events: int, workdir: Path) -> list[dict]:
    """pyarrow.json.read_json then Parquet (zstd), with pyarrow's threads; and
    read_json alone on one thread, the yardstick for our encoder."""
    options = pa_json.ReadOptions(use_threads=True, block_size=16 << 20)
    pa_json.read_json(io.BytesIO(_warm_up_slice(corpus)))  # first-call set-up (time zones, pools) is not timed
    table, read_seconds = _timed(lambda: pa_json.read_json(io.BytesIO(corpus), read_options=options))
    assert table.num_rows == events, (table.num_rows, events)
    path = workdir / "pyarrow.parquet"
    _, write_seconds = _timed(partial(pq.write_table, table, path, compression="zstd"))
    table = None  # free it before the next reads
    path.unlink()
    one_thread = pa_json.ReadOptions(use_threads=False, block_size=16 << 20)
    _, parse_seconds = _best_of(REPEATS, lambda: pa_json.read_json(io.BytesIO(corpus), read_options=one_thread))
    return [
        _figure("pyarrow.json.read_json → Parquet (zstd)", events, read_seconds + write_seconds,
                key="pyarrow", read_seconds=round(read_seconds, 4), write_seconds=round(write_seconds, 4),
                threads="pyarrow's pool"),
        _figure("pyarrow.json.read_json, one thread (parse only)", events, parse_seconds,
                key="pyarrow-read-json-1t", threads=1, best_of=REPEATS),
    ]


def duckdb_read_ndjson(corpus_path: Path, events: int, workdir: Path) -> list[dict]:
    """DuckDB loading the NDJSON file itself into a table of a database file."""
    database = workdir / "read_ndjson.duckdb"
    con = duckdb.connect(str(database))
    try:
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        path = str(corpus_path).replace("'", "''")
        _, seconds = _timed(lambda: con.execute(f"CREATE TABLE events AS SELECT * FROM read_ndjson('{path}')"))
        loaded = con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()
        for leftover in workdir.glob("read_ndjson.duckdb*"):
            leftover.unlink()
    assert loaded == events, (loaded, events)
    return [_figure("DuckDB read_ndjson → table", events, seconds, key="duckdb-read-ndjson", threads=threads)]


def duckdb_row_insert(corpus: bytes, row_events: int, bulk_batch, workdir: Path) -> list[dict]:
    """One INSERT statement per event, each its own transaction, the way an
    application writes events one by one; against the same events' bulk
    INSERT from Arrow (the DuckDB sink's own write: one transaction)."""
    schema = bulk_batch.schema
    names = [field.name for field in schema]
    rows = []
    for line in corpus.splitlines()[:row_events]:
        event = json.loads(line)
        rows.append([
            json.dumps(event.get(field.name), separators=(",", ":")) if is_json_field(field) and event.get(field.name) is not None
            else event.get(field.name)
            for field in schema
        ])
    con = duckdb.connect(str(workdir / "row_insert.duckdb"))
    try:
        columns = ", ".join(f"{quote_identifier(f.name)} {duckdb_type(f)}" for f in schema)
        con.execute(f"CREATE TABLE events ({columns})")
        statement = f"INSERT INTO events ({', '.join(map(quote_identifier, names))}) VALUES ({', '.join('?' * len(names))})"

        def insert_each():
            for row in rows:
                con.execute(statement, row)

        _, row_seconds = _timed(insert_each)
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == len(rows)
    finally:
        con.close()
    sink = DuckDBSink(workdir / "bulk_insert.duckdb")
    try:
        _, bulk_seconds = _timed(lambda: sink.write("events", bulk_batch))
    finally:
        sink.close()
        for leftover in list(workdir.glob("row_insert.duckdb*")) + list(workdir.glob("bulk_insert.duckdb*")):
            leftover.unlink()
    row = _figure("DuckDB INSERT per row (autocommit)", len(rows), row_seconds,
                  key="duckdb-row-insert", extrapolated=True)
    bulk = _figure("DuckDB bulk INSERT from Arrow (sink's write)", bulk_batch.num_rows, bulk_seconds,
                   key="duckdb-bulk-insert")
    return [row, bulk]


def encoders(sealed, events: int, reference_events: int, batch_events: int) -> tuple[list[dict], object]:
    """Encode-only, one thread: the compiled encoder on the whole corpus in
    batches of `batch_events` (as the server seals them), the pure-Python
    reference on the first `reference_events` lines. Returns the whole
    corpus as one encoded batch too, for the bulk-insert baseline."""
    from ingest.hotpath._encoder import Encoder as CompiledEncoder
    from ingest.hotpath.reference.encoder import Encoder as ReferenceEncoder

    data, spans = sealed.data(), sealed.spans()
    whole = CompiledEncoder("bench").encode(data, spans)  # also the warm-up
    assert whole.batch.num_rows == events and not whole.errors, whole.errors[:3]

    def encode_in_batches():
        encoder = CompiledEncoder("bench")  # one per table in the server, kept across batches
        for start in range(0, events, batch_events):
            encoder.encode(data, spans[2 * start:2 * min(events, start + batch_events)])

    _, compiled_seconds = _best_of(REPEATS, encode_in_batches)
    reference_spans = spans[:2 * reference_events]
    reference, reference_seconds = _timed(lambda: ReferenceEncoder("bench").encode(data, reference_spans))
    assert reference.batch.num_rows == reference_events
    return [
        _figure("ingest encoder, compiled (Cython)", events, compiled_seconds, key="encoder-compiled", threads=1,
                best_of=REPEATS, batch_events=batch_events),
        _figure("ingest encoder, pure-Python reference", reference_events, reference_seconds,
                key="encoder-reference", threads=1, extrapolated=True),
    ], whole.batch
