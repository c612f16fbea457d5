"""What makes an acknowledged event survive a crash: the write-ahead log
and the recovery that replays it against the sink's ledger."""
