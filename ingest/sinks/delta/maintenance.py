"""`ingest compact` and `ingest vacuum` for Delta tables: safe beside
running writers. Compaction commits remove and add actions that never
touch the files an append adds, and delta-rs retries the commit when
appends came first; a compaction that still loses the race (another
compaction, a schema change) is tried again with backoff."""
from __future__ import annotations

import logging
import time

from ingest.backoff import full_jitter

log = logging.getLogger("ingest.sinks.delta")

TARGET_FILE_BYTES = 128 << 20  # what a compacted file aims at (Delta's own default is 100 MiB)


def _open(root: str, table: str, storage_options: dict):
    from deltalake import DeltaTable

    return DeltaTable(f"{root}/{table}", storage_options=storage_options or None)


def compact(root: str, table: str, storage_options: dict, attempts: int = 8, commit_retries: int = 100) -> dict:
    """Rewrites each partition's small files into files of about
    TARGET_FILE_BYTES; returns delta-rs's metrics (files added, removed)."""
    from deltalake import CommitProperties
    from deltalake.exceptions import CommitFailedError

    for attempt in range(attempts):
        delta_table = _open(root, table, storage_options)
        try:
            return delta_table.optimize.compact(target_size=TARGET_FILE_BYTES, commit_properties=CommitProperties(
                max_commit_retries=commit_retries, custom_metadata={"ingest.operation": "compact"}))
        except CommitFailedError as exc:
            if attempt + 1 == attempts:
                raise
            delay = full_jitter(attempt + 1, 0.2, 10.0)
            log.warning("table %s: compaction lost a commit race (%s); trying again in %.1fs", table, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def vacuum(root: str, table: str, storage_options: dict, retain_hours: int) -> list[str]:
    """Deletes the files no version younger than `retain_hours` reads (what
    compaction replaced); returns their paths. Readers of older versions
    (time travel, a long query) need them: keep `retain_hours` above your
    longest query."""
    return _open(root, table, storage_options).vacuum(retention_hours=retain_hours, dry_run=False,
                                                      enforce_retention_duration=False)
