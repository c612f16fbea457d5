"""Exponential backoff with full jitter, the one formula every retry here uses."""
import random


def full_jitter(attempt: int, base: float, ceiling: float) -> float:
    """Seconds to wait before retry `attempt`: random(0, min(base * 2^attempt, ceiling))."""
    return random.uniform(0, min(base * 2 ** attempt, ceiling))
