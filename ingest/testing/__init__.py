"""Helpers for tests and benchmarks: the event corpus, a server subprocess."""
from ingest.testing.server_process import ServerProcess, parse_listening, poll

__all__ = ["ServerProcess", "parse_listening", "poll"]
