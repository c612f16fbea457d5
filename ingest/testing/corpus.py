"""Reproducible event corpora for tests and benchmarks: ~200-byte JSON
events with ints, floats, bools, strings, ISO timestamps, a nested object and
optional fields. The same seed gives the same bytes.

Two shapes: `ndjson` (nested: a `context` object, landed as JSON text) and
`flat_ndjson` (the same fields, `context` spread into top-level scalars)."""
from __future__ import annotations

import random
from array import array

EVENT_NAMES = ("page_view", "click", "signup", "purchase", "logout", "search")
COUNTRIES = ("DE", "FR", "US", "BR", "JP", "IN", "NG", "AU")
PLANS = ("free", "pro", "team", "enterprise")


def _timestamp(i: int) -> str:
    ms = 1_700_000_000_000 + i * 7
    seconds, millis = divmod(ms, 1000)
    day, rest = divmod(seconds, 86400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"2024-{1 + day % 12:02d}-{1 + day % 28:02d}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


def _event(i: int, rng: random.Random, nested: bool) -> str:
    optional = f',"coupon":"C{rng.randrange(10_000):04d}"' if i % 3 == 0 else ""
    head = (
        f'{{"id":{i},"ts":"{_timestamp(i)}","user_id":{rng.randrange(1_000_000)},'
        f'"event":"{EVENT_NAMES[i % len(EVENT_NAMES)]}","amount":{rng.randrange(100_000) / 100},'
        f'"ok":{"true" if i % 5 else "false"},"country":"{COUNTRIES[i % len(COUNTRIES)]}",'
    )
    plan, session, retries = PLANS[i % len(PLANS)], f"s{rng.randrange(1 << 30):09x}", i % 4
    context = (f'"context":{{"plan":"{plan}","session":"{session}","retries":{retries}}}' if nested else
               f'"context_plan":"{plan}","context_session":"{session}","context_retries":{retries}')
    return f'{head}{context}{optional},"path":"/app/item/{rng.randrange(100_000)}"}}'


def event_line(i: int, rng: random.Random) -> str:
    """One event as a JSON line (without newline); `id` is `i`."""
    return _event(i, rng, nested=True)


def ndjson(count: int, seed: int = 0, start: int = 0) -> bytes:
    """`count` events as NDJSON bytes, ids start..start+count-1."""
    rng = random.Random(seed)
    return ("\n".join(event_line(i, rng) for i in range(start, start + count)) + "\n").encode()


def flat_event_line(i: int, rng: random.Random) -> str:
    """`event_line` without nesting: `context`'s fields become top-level
    `context_plan`, `context_session`, `context_retries`. Same draws from `rng`."""
    return _event(i, rng, nested=False)


def flat_ndjson(count: int, seed: int = 0, start: int = 0) -> bytes:
    """`count` flat events as NDJSON bytes, ids start..start+count-1."""
    rng = random.Random(seed)
    return ("\n".join(flat_event_line(i, rng) for i in range(start, start + count)) + "\n").encode()


SHAPES = {"nested": ndjson, "flat": flat_ndjson}  # shape name -> generator(count, seed, start)


def encoder_input(lines: list[bytes]) -> tuple[bytes, array]:
    """Lines as the encoder takes them: the bytes back to back, and their
    [start, end, ...] offsets as int64."""
    offsets = array("q")
    position = 0
    for line in lines:
        offsets.extend((position, position + len(line)))
        position += len(line)
    return b"".join(lines), offsets
