"""Kept for `from ingest.webhooks import verify` (and `sign`): webhooks live in `ingest.server.webhooks`."""
from ingest.server.webhooks import sign, verify

__all__ = ["sign", "verify"]
