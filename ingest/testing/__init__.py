"""Helpers for tests and benchmarks: the event corpus, a server subprocess."""
