"""Segment's HTTP Tracking API bodies (placeholder: the mapping lands next)."""
from __future__ import annotations

from ingest.sources.sdk import SdkSource

SOURCE = SdkSource("segment", {"track": "tracks"}, {})
