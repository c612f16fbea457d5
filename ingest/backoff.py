"""Exponential backoff with full jitter, the one formula every retry here uses."""
import random

MAX_EXPONENT = 64  # 2^64 times any sane base is past any ceiling


def full_jitter(attempt: int, base: float, ceiling: float) -> float:
    """Seconds to wait before retry `attempt`: random(0, min(base * 2^attempt, ceiling)).
    The exponent is capped, so a day of retries cannot overflow a float."""
    return random.uniform(0, min(base * 2 ** min(attempt, MAX_EXPONENT), ceiling))
