"""A node's name among several servers writing one table: the Delta sink
records each batch's id under it, so it must stay the same for as long as
the data directory (its write-ahead log) lives. Kept in DIR/node-id."""
from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

NODE_ID_FILE = "node-id"


class NodeIdMismatch(ValueError):
    """--node-id names another node than the one whose log is in the data directory."""


def node_id(data_dir: Path, wanted: str = "") -> str:
    """The data directory's node id: the stored one; `wanted` (--node-id) on
    first use, or else a new one (host name and a random suffix)."""
    path = data_dir / NODE_ID_FILE
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        stored = ""
    if stored:
        if wanted and wanted != stored:
            raise NodeIdMismatch(
                f"{data_dir} belongs to node {stored!r} (its {NODE_ID_FILE} file), not {wanted!r}: its write-ahead log's "
                f"batches are recorded under {stored!r}; run with --node-id {stored} or another data directory")
        return stored
    chosen = wanted or f"{_host()}-{secrets.token_hex(4)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{NODE_ID_FILE}.tmp")
    with open(temporary, "w") as out:
        out.write(chosen + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    return chosen


def _host() -> str:
    name = socket.gethostname().split(".")[0]
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "node"
