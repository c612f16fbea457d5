"""The core: batching, the pipeline, accounting, the memory budget, receipts,
idempotency and the dead-letter store. It imports the hot path, the schema,
backoff and its own ports (`core.ports`), never sources, sinks, the
write-ahead log or the server."""
