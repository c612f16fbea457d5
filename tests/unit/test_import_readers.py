"""How an import cuts a file into batches, and finds its place again: in
process, on files in tmp_path."""
import gzip
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.backfill.inputs import JSON_ARRAY, NDJSON, PARQUET, InputError, expand, identify
from ingest.backfill.job import ImportRefused, open_job
from ingest.backfill.readers import ReadOptions, chunks
from ingest.core.batch import BatchId, Ledger

FRAMED = ReadOptions(chunk_bytes=1 << 20, max_events=7, frame=True)
TEXT = ReadOptions(chunk_bytes=64, max_events=7, frame=False)


def lines_of(chunk) -> list[bytes]:
    return [chunk.lines.line(i) for i in range(chunk.events)]


def write(path, data: bytes, compress: bool = False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return identify(str(path))


@pytest.mark.parametrize("compress", [False, True])
def test_chunks_end_at_line_ends_and_a_resumed_read_starts_where_one_ended(tmp_path, compress):
    data = b"".join(b'{"n":%d}\r\n' % i if i % 5 == 0 else b'{"n":%d}\n' % i for i in range(30))
    file = write(tmp_path / "a.ndjson", data, compress)
    assert (file.compression, file.format) == ("gzip" if compress else None, NDJSON)
    read = list(chunks(file, 0, FRAMED))
    assert [c.events for c in read] == [7, 7, 7, 7, 2]
    assert [c.start for c in read[1:]] == [c.end for c in read[:-1]] and read[-1].end == len(data)
    assert b"".join(line + b"\n" for c in read for line in lines_of(c)) == data.replace(b"\r\n", b"\n")
    resumed = list(chunks(file, read[2].end, FRAMED))
    assert [(c.start, c.end) for c in resumed] == [(c.start, c.end) for c in read[3:]]
    assert resumed[0].origin(0) == f"{file.path}:22"


def test_a_batch_read_again_is_the_same_stretch_even_with_other_limits(tmp_path):
    data = b"".join(b'{"n":%d}\n' % i for i in range(30))
    file = write(tmp_path / "a.ndjson", data)
    first = list(chunks(file, 0, FRAMED))[1]
    again = next(chunks(file, first.start, ReadOptions(1 << 20, 3, True), first_end=first.end))
    assert (again.start, again.end, lines_of(again)) == (first.start, first.end, lines_of(first))


def test_line_numbers_count_blank_lines_and_a_last_line_without_newline(tmp_path):
    data = b'{"a":1}\n\n   \n{"a":2}\n{bad\n\n{"a":3}'
    file = write(tmp_path / "b.ndjson", data)
    [chunk] = list(chunks(file, 0, FRAMED))
    assert lines_of(chunk) == [b'{"a":1}', b'{"a":2}', b"{bad", b'{"a":3}']
    assert [chunk.origin(i) for i in range(4)] == [f"{file.path}:{n}" for n in (1, 4, 5, 7)]


def test_text_chunks_keep_the_bytes_as_they_are(tmp_path):
    data = b"".join(b'{"n":%d,"pad":"xxxxxxxxxx"}\n' % i for i in range(20))
    file = write(tmp_path / "c.ndjson", data)
    read = list(chunks(file, 0, TEXT))
    assert b"".join(c.body for c in read) == data and all(c.body.endswith(b"\n") for c in read)
    assert read[1].origin(0) == f"{file.path}:{1 + read[0].events}"


def test_json_arrays_and_parquet_are_placed_by_element_and_row(tmp_path):
    array = write(tmp_path / "a.json", b' [{"n":1},{"n":2},\n{"n":3}]')
    assert array.format == JSON_ARRAY
    assert [(c.start, c.end) for c in chunks(array, 1, ReadOptions(1 << 20, 1, True))] == [(1, 2), (2, 3)]
    pq.write_table(pa.table({"n": list(range(10))}), tmp_path / "p.parquet", row_group_size=4)
    parquet = identify(str(tmp_path / "p.parquet"))
    assert parquet.format == PARQUET
    read = list(chunks(parquet, 3, ReadOptions(1 << 20, 3, True)))
    assert [(c.start, c.end) for c in read] == [(3, 4), (4, 7), (7, 8), (8, 10)]
    assert [n for c in read for n in c.rows.column("n").to_pylist()] == list(range(3, 10))


def test_a_file_that_ends_before_the_earlier_run_got_to_is_an_error(tmp_path):
    file = write(tmp_path / "a.ndjson", b'{"n":1}\n')
    with pytest.raises(InputError, match="ends before byte 100"):
        list(chunks(file, 100, FRAMED))


def test_expand_walks_directories_and_globs_and_refuses_what_is_not_there(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/b.ndjson", "d/e/a.ndjson", "d/.hidden", "d/e/.x/y.ndjson"):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        (tmp_path / name).write_bytes(b"{}\n")
    assert expand([str(tmp_path / "d")]) == [str(tmp_path / "d/b.ndjson"), str(tmp_path / "d/e/a.ndjson")]
    assert expand([str(tmp_path / "d" / "**" / "*.ndjson"), str(tmp_path / "d/b.ndjson")]) == [
        str(tmp_path / "d/b.ndjson"), str(tmp_path / "d/e/a.ndjson")]
    with pytest.raises(InputError, match="no such file"):
        expand([str(tmp_path / "nope")])
    with pytest.raises(InputError, match="cannot be mixed"):
        expand(["-", str(tmp_path / "d/b.ndjson")])


def test_a_job_is_found_again_by_its_arguments_and_takes_in_new_files(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "1.ndjson").write_bytes(b"{}\n")
    pattern = str(tmp_path / "in" / "*.ndjson")
    job, resumed = open_job(tmp_path / "imports", "t", [pattern], expand([pattern]), "", restart=False)
    assert not resumed and job.log(0) == f"import-{job.key}-1-0"
    (tmp_path / "in" / "2.ndjson").write_bytes(b"{}\n")
    again, resumed = open_job(tmp_path / "imports", "t", [pattern], expand([pattern]), "", restart=False)
    assert resumed and again.key == job.key and [f.path for f in again.files] == expand([pattern])
    (tmp_path / "in" / "1.ndjson").write_bytes(b"{}\n{}\n")
    with pytest.raises(ImportRefused, match="changed since this import began reading it"):
        open_job(tmp_path / "imports", "t", [pattern], expand([pattern]), "", restart=False)
    restarted, resumed = open_job(tmp_path / "imports", "t", [pattern], expand([pattern]), "", restart=True)
    assert not resumed and restarted.run == 2 and restarted.log(0) != job.log(0)


def test_batch_ids_of_another_log_keep_their_name_and_stay_out_of_the_write_ahead_logs_ledger():
    batch_id = BatchId(0, 4096, log="import-abc-1-2").slice(10, 5)
    assert str(batch_id) == "import-abc-1-2@000000000000-000000004096.10+5"
    assert BatchId.parse(str(batch_id)) == batch_id and batch_id.batch == BatchId(0, 4096, log="import-abc-1-2")
    ids = [("t", BatchId(1, 3)), ("t", BatchId(0, 4096, log="import-abc-1-2"))]
    assert Ledger.from_ids(ids).complete == {"t": {(1, 3)}}
    assert Ledger.from_ids(ids, "import-abc-1-2").complete == {"t": {(0, 4096)}}


def test_the_resume_point_is_the_end_of_the_stretch_landed_from_the_start():
    from ingest.backfill.local import resume_point

    assert resume_point([], [], []) == (0, None)
    assert resume_point([(0, 10), (10, 25)], [], []) == (25, None)
    # a batch rejected whole between landed ones continues the stretch
    assert resume_point([(0, 10), (20, 30)], [(10, 20)], []) == (30, None)
    # one the encoder settled while the batch before it was still being written does not
    assert resume_point([], [(10, 20)], []) == (0, None)
    assert resume_point([(0, 10)], [(20, 30)], []) == (10, None)
    # a batch of which some slices landed is read again exactly (DuckDB and Parquet: exact ranges)
    assert resume_point([(0, 10)], [], [(10, 18)]) == (10, 18)
    # Delta: the watermark as (1, last), and a partial batch's predecessors as (1, first - 1)
    assert resume_point([(1, 40)], [], []) == (40, None)
    assert resume_point([(1, 39)], [], [(40, 55)]) == (40, 55)
    assert resume_point([], [], [(0, 12)]) == (0, 12)


def test_an_exact_reread_takes_in_a_last_line_without_newline(tmp_path):
    data = b'{"i":0}\n{"i":1}\n{"i":2}\n{"i":3}'
    file = write(tmp_path / "a.ndjson", data)
    [first, second] = list(chunks(file, 0, ReadOptions(1 << 20, 2, True)))
    [again] = list(chunks(file, second.start, FRAMED, first_end=second.end))
    assert (again.start, again.end, lines_of(again)) == (second.start, second.end, lines_of(second))


def test_line_numbers_hold_when_a_blank_line_straddles_read_blocks(tmp_path, monkeypatch):
    from ingest.backfill import readers

    monkeypatch.setattr(readers, "READ_BLOCK", 9)
    data = b'{"i":0}\n  \n{"i":2}\n\r\n{"i":4}\n'
    file = write(tmp_path / "a.ndjson", data)
    [chunk] = list(chunks(file, 0, FRAMED))
    assert [chunk.origin(i) for i in range(chunk.events)] == [f"{file.path}:{n}" for n in (1, 3, 5)]


def test_text_chunks_depend_on_their_start_alone_so_a_resumed_run_sends_the_same_keys(tmp_path):
    data = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * (i % 37)) for i in range(300))
    file = write(tmp_path / "a.ndjson.gz", data, compress=True)
    options = ReadOptions(chunk_bytes=500, max_events=10, frame=False)
    first = [(c.start, c.end) for c in chunks(file, 0, options)]
    for resumed_at in (first[3][0], first[17][0]):
        assert [(c.start, c.end) for c in chunks(file, resumed_at, options)] == [r for r in first if r[0] >= resumed_at]
    long_line = b'{"n":"' + b"y" * 2000 + b'"}\n'
    file = write(tmp_path / "b.ndjson", b'{"a":1}\n' + long_line + b'{"a":2}')
    assert [c.body for c in chunks(file, 0, options)] == [b'{"a":1}\n', long_line, b'{"a":2}']


def test_a_pretty_printed_array_is_sent_one_element_a_line(tmp_path):
    file = write(tmp_path / "a.json", b'[\n  {\n    "id": 1\n  },\n  {"id": 2}\n]\n')
    [chunk] = list(chunks(file, 0, TEXT))
    assert chunk.body.splitlines() == [b'{     "id": 1   }', b'{"id": 2}']


def test_an_unreadable_parquet_file_is_an_input_error(tmp_path):
    pq.write_table(pa.table({"n": list(range(1000))}), tmp_path / "p.parquet", row_group_size=100)
    raw = bytearray((tmp_path / "p.parquet").read_bytes())
    raw[600:800] = b"\xff" * 200
    (tmp_path / "p.parquet").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="p.parquet: cannot read it"):
        list(chunks(identify(str(tmp_path / "p.parquet")), 0, ReadOptions(1 << 20, 100, True)))
