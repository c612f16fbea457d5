"""The wire contract that the server and the client both import: table
names, wait modes, the headers and reply fields they agree on. Standard
library only: `ingest.client` depends on nothing else."""
from __future__ import annotations

import re

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Names the server uses itself: the DuckDB ledger and batch view (_ingest_ledger, __ingest_batch), the
# dead-letter store's write-ahead-log damage and quarantine folders. No client may write to them.
RESERVED_PREFIXES = ("_ingest", "__ingest")
RESERVED_NAMES = ("_wal", "_quarantine")


def table_name_problem(name: str) -> str | None:
    """Why `name` cannot be a table, or None when it can."""
    if not TABLE_NAME.match(name):
        return (f"invalid table name {name!r}: use letters, digits and _, not starting with a digit, "
                "at most 63 characters")
    folded = name.lower()
    if folded.startswith(RESERVED_PREFIXES) or folded in RESERVED_NAMES:
        return (f"table name {name!r} is reserved for the server's own use (names starting with "
                f"{' or '.join(RESERVED_PREFIXES)}, and {', '.join(RESERVED_NAMES)})")
    return None


WAIT_MODES = ("none", "received", "flushed")  # ?wait=: answered at once, once in the log, once landed
DEFAULT_WAIT = "received"
