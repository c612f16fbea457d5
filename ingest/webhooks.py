"""Kept for `from ingest.webhooks import verify`: webhooks live in `ingest.server.webhooks`."""
from ingest.server.webhooks import verify

__all__ = ["verify"]
