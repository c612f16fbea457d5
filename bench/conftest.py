import pytest

from ingest.testing.corpus import ndjson

EVENTS = 100_000


@pytest.fixture(scope="session")
def corpus() -> bytes:
    """100,000 events of about 200 bytes, the same as the tests use."""
    return ndjson(EVENTS, seed=1)
