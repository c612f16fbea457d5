"""`ingest import`: backfills of files into a table, standalone or through a
server, with progress, checkpoints in the sink's ledger, and resume.

    inputs    PATH arguments -> input files: identity (size, mtime, head hash), format, stdin
    readers   a file as chunks, each with its place in the file (byte offset, element, row)
    job       the manifest: which files, in what order, as they were; each file's log name
    local     standalone: the server's pipeline in this process, no listeners, no write-ahead log
    remote    --target: chunks POSTed with idempotency keys made of file and offset
    progress  the tqdm bar or JSON lines on stderr, the summary
"""
