"""Micro-benchmarks of the hot path against the baselines it must beat, in one
run: `make bench` (or `.venv/bin/python -m pytest bench --benchmark-only`).
Compare the `ops` columns: each round processes the same 100,000 events."""
import io

import pyarrow as pa
import pyarrow.json as pa_json
import pytest

from ingest.hotpath import _buffer, _encoder
from ingest.hotpath.reference import buffer as reference_buffer
from ingest.hotpath.reference import encoder as reference_encoder


def framed(module, corpus: bytes):
    out = module.BatchBuffer()
    framer = module.LineFramer()
    framer.feed(corpus, 0, out)
    return out.seal()


@pytest.mark.parametrize("module", [_buffer, reference_buffer], ids=["cython", "python"])
def test_framing(benchmark, corpus, module):
    sealed = benchmark(framed, module, corpus)
    assert sealed.events == 100_000


@pytest.mark.parametrize("module", [_encoder, reference_encoder], ids=["cython", "python"])
def test_encode(benchmark, corpus, module):
    sealed = framed(_buffer, corpus)
    data, spans = sealed.data(), sealed.spans()
    rounds = {"rounds": 1, "iterations": 1} if module is reference_encoder else {"rounds": 5, "iterations": 1}
    result = benchmark.pedantic(lambda: module.Encoder("bench").encode(data, spans), **rounds)
    assert result.batch.num_rows == 100_000 and not result.errors


@pytest.mark.parametrize("threads", [False, True], ids=["one-thread", "threads"])
def test_baseline_pyarrow_read_json(benchmark, corpus, threads):
    options = pa_json.ReadOptions(use_threads=threads, block_size=1 << 24)
    table = benchmark.pedantic(lambda: pa_json.read_json(io.BytesIO(corpus), read_options=options), rounds=5)
    assert table.num_rows == 100_000


@pytest.mark.parametrize("sink", ["duckdb", "parquet"])
def test_sink_write(benchmark, corpus, tmp_path, sink):
    from ingest.sinks.duckdb import DuckDBSink
    from ingest.sinks.parquet import ParquetSink

    batch = _encoder.Encoder("bench").encode(*(lambda s: (s.data(), s.spans()))(framed(_buffer, corpus))).batch
    target = DuckDBSink(tmp_path / "bench.duckdb") if sink == "duckdb" else ParquetSink(tmp_path / "parquet")
    benchmark.pedantic(lambda: target.write("events", batch), rounds=5)
    target.close()
    assert isinstance(batch, pa.RecordBatch)
