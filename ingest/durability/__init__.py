"""What makes an acknowledged event survive a crash: the write-ahead log
and the recovery that replays it against the sink's ledger."""

FSYNC_MODES = ("always", "interval", "off")  # --wal-fsync; here so the settings can check it without loading the log
