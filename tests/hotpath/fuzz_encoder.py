"""Fuzz target (atheris/libFuzzer): arbitrary bytes as NDJSON into the
compiled encoder, inferred and with a declared schema, checked against
invariants and against the pure-Python reference.

    .venv/bin/python tests/hotpath/fuzz_encoder.py -max_total_time=60 -timeout=10
    .venv/bin/python tests/hotpath/fuzz_encoder.py -max_total_time=3600 -timeout=10 fuzz-corpus/

Any libFuzzer flag works; with no corpus directory given, $TMPDIR/ingest-fuzz-corpus
is used (seeded when empty), and a dictionary of JSON tokens and the declared
keys is added unless -dict= is given. A failure writes crash-*/timeout-* (see -artifact_prefix=);
replay one with `.venv/bin/python tests/hotpath/fuzz_encoder.py crash-...`.
tests/soak/test_fuzz.py runs this for INGEST_FUZZ_SECONDS (60) in the test suite;
README "Fuzzing" has the AddressSanitizer build. INGEST_FUZZ_REFERENCE=0 skips
the comparison with the pure-Python reference.

One input: byte 0 picks the setup (bit 0 a declared schema, bit 1 strict,
bits 2-3 max_depth 64/4/6/16, bit 4 two encode() calls on one Encoder
instead of one); the rest is split at b"\\n" into lines.
"""
from __future__ import annotations

import os
import sys
import tempfile
from array import array
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["ingest"]):  # coverage comes from the reference's Python
    import ingest.hotpath.reference.encoder as reference
    from ingest.testing.corpus import encoder_input as inputs
    from ingest.testing.corpus import ndjson
    from ingest.schema import declared_schema

import ingest.hotpath._encoder as compiled  # C: covered only in an ASan/-fsanitize=fuzzer-no-link build

DECLARED = declared_schema({
    "id": "int64", "f": "float64", "b": "bool", "s": "string", "ts": "timestamp[ms]", "d": "date",
    "j": "json", "l": "list<int64>", "ll": "list<list<string>>",
    "st": "struct<a: string, t: timestamp[s], l: list<struct<x: int64, d: date>>>",
})
DEPTHS = (64, 4, 6, 16)  # "st" nests 3 lists/structs: max_depth 4 at least
# Compare with the pure-Python reference on inputs up to this size; INGEST_FUZZ_REFERENCE=0
# skips it (faster, for an ASan build, whose C coverage guides the fuzzer by itself).
REFERENCE_LIMIT = 1 << 16 if os.environ.get("INGEST_FUZZ_REFERENCE", "1") not in ("", "0") else -1
DICTIONARY = [
    "{", "}", "[", "]", ":", ",", '"', "true", "false", "null", "\\\\", '\\"', "\\u", "\\u00e9", "\\ud83d\\ude00",
    "\\ud800", "-0", "1.5e-3", "1e400", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "2024-02-29T23:59:59.999999Z", "1969-12-31T23:59:59.5+01:30", "2024-02-29", "0000-01-01", "9999-12-31",
    "253402300799", "\ufeff", *(f'"{field.name}":' for field in DECLARED),
    '"a":', '"t":', '"x":', '"l":', '"d":', '"extra":',
]
SEEDS = [
    ndjson(8, seed=1),
    b'{"id":1,"f":2,"b":true,"s":"x","ts":"2024-01-01T00:00:00.123Z","d":"2024-02-29","j":{"a":[1]},'
    b'"l":[1,null,3],"ll":[["a"],[],null],"st":{"a":"y","t":1700000000,"l":[{"x":1,"d":"1970-01-01"},null]}}\n'
    b'{"id":"x"}\n{"st":{"l":[{"x":"bad"}]}}\n{"ll":[[1]]}\n{"extra":[{"deep":[[]]}],"st":{"a":"1","a":null}}',
    b'{"a":1}\n{"a":1.5}\n{"a":"2024-01-01T00:00:00Z"}\n{"a":{"b":[1,2]}}\n{"":1}\n[1]\n{"a":"\\ud800"}',
]




def check_call(lines: list[bytes], fast, slow, declared: bool, strict: bool) -> None:
    """One encode() call of both implementations, on the same lines."""
    data, spans = inputs(lines)
    got = fast.encode(data, spans)
    errors = got.errors
    indices = [index for index, _ in errors]
    assert indices == sorted(set(indices)), errors
    assert all(0 <= index < len(lines) and isinstance(reason, str) for index, reason in errors), errors
    rows = 0 if got.batch is None else got.batch.num_rows
    assert rows + len(errors) == len(lines), (rows, errors, len(lines))
    if got.batch is None:
        assert rows == 0 and len(fast.schema) == 0
    else:
        got.batch.validate(full=True)
        assert got.batch.schema.equals(fast.schema, check_metadata=True)
        if declared:
            names = got.batch.schema.names
            assert names[:len(DECLARED)] == DECLARED.names
            assert not strict or len(names) == len(DECLARED)
    syntax = [error for error in errors if not error[1].startswith("field '")]
    assert compiled.validate_lines(data, spans, fast.max_depth) == syntax
    if slow is not None:
        expected = slow.encode(data, spans)
        assert errors == expected.errors, (errors, expected.errors)
        if got.batch is None or expected.batch is None:
            assert got.batch is None and expected.batch is None
        else:
            assert got.batch.schema.equals(expected.batch.schema, check_metadata=True)
            assert got.batch.equals(expected.batch), (got.batch.to_pylist(), expected.batch.to_pylist())


def test_one_input(data: bytes) -> None:
    if not data:
        return
    setup, body = data[0], data[1:]
    declared, strict = bool(setup & 1), bool(setup & 3 == 3)
    max_depth = DEPTHS[(setup >> 2) & 3]
    lines = body.split(b"\n")
    kwargs = {"max_depth": max_depth}
    if declared:
        kwargs.update(schema=DECLARED, strict=strict)
    fast = compiled.Encoder("fuzz", **kwargs)
    slow = reference.Encoder("fuzz", **kwargs) if len(body) <= REFERENCE_LIMIT else None
    # validate_lines alone, on spans with gaps (the newlines stay between lines)
    offsets = array("q")
    position = 0
    for line in lines:
        offsets.extend((position, position + len(line)))
        position += len(line) + 1
    found = compiled.validate_lines(body, offsets, max_depth)
    assert all(0 <= index < len(lines) for index, _ in found)
    calls = [lines[:len(lines) // 2], lines[len(lines) // 2:]] if setup & 16 else [lines]
    for call in calls:
        check_call(call, fast, slow, declared, strict)


def main() -> None:
    argv = list(sys.argv)
    scratch = Path(tempfile.gettempdir())
    if not any(arg.startswith("-dict=") for arg in argv):
        path = scratch / "ingest-fuzz-encoder.dict"
        staged = path.with_name(f"{path.name}.{os.getpid()}")
        staged.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in token.encode("utf-8")) + '"\n'
                                  for token in DICTIONARY))
        os.replace(staged, path)  # other fuzzers may be reading it
        argv.insert(1, f"-dict={path}")
    directories = [arg for arg in argv[1:] if not arg.startswith("-") and os.path.isdir(arg)]
    files = [arg for arg in argv[1:] if not arg.startswith("-") and os.path.isfile(arg)]
    if not directories and not files:  # a corpus that grows from run to run
        directories = [str(scratch / "ingest-fuzz-corpus")]
        os.makedirs(directories[0], exist_ok=True)
        argv.append(directories[0])
    for directory in directories:
        if not os.listdir(directory):
            for i, seed in enumerate(SEEDS):
                for setup in (0, 1, 3, 17):
                    Path(directory, f"seed-{i}-{setup}").write_bytes(bytes([setup]) + seed)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
