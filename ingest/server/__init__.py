"""The server: the composition root that wires sources, the core, the
write-ahead log and a sink together (`app`), with its settings (`config`),
its state on disk (`state`), metrics and webhooks."""
