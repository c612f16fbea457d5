"""An import job: which files it reads, in what order, and what each was
when the job began. The manifest, `imports/{key}.json`, is written before
any row lands; the key comes from the table and the PATH arguments, so
running the same command again finds the same job.

What has landed is not kept here but in the sink, in the same commit as
the rows: each file is a log of its own, named `import-{key}-{run}-{n}`,
and each batch's id is that log's name and the stretch of the file it
holds (BatchId.log). Resuming asks the sink's ledger (and the dead-letter
store) where each file's landed stretch ends. Through a server
(`--target`), whose ledger is out of reach, the manifest keeps where each
file's acknowledged stretch ends instead, and the server's idempotency keys
make a batch sent twice land once."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from ingest.backfill.inputs import InputFile, identify


class ImportRefused(Exception):
    """The job cannot go on as asked (a file changed, one went missing); one line."""


@dataclass
class Job:
    directory: Path  # where the manifest lives
    key: str
    run: int  # counts --restart: each run's files are new logs
    table: str
    arguments: list[str]
    files: list[InputFile]
    created: str
    complete: set[int] = field(default_factory=set)  # files read to their end with every batch settled
    acknowledged: dict[int, int] = field(default_factory=dict)  # --target: file -> end of its acknowledged stretch

    @property
    def path(self) -> Path:
        return self.directory / f"{self.key}.json"

    @property
    def resumable(self) -> bool:
        return not (self.files and self.files[0].is_stdin)

    def to_read(self, summary, progress):
        """(index, file) of each file left to read; those an earlier run
        imported whole are counted as skipped (in `summary` and `progress`)."""
        for index, file in enumerate(self.files):
            if index in self.complete:
                summary.files_skipped += 1
                progress.skip(max(file.size, 0))
                continue
            yield index, file

    def log(self, index: int) -> str:
        """The name of file `index`'s log: what its batch ids are ids in."""
        return f"import-{self.key}-{self.run}-{index}"

    def save(self) -> None:
        """Written whole to a temporary file, synced and renamed over the last."""
        document = {"key": self.key, "run": self.run, "table": self.table, "arguments": self.arguments,
                    "created": self.created, "files": [f.as_dict() for f in self.files],
                    "complete": sorted(self.complete), "acknowledged": {str(k): v for k, v in self.acknowledged.items()}}
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with open(temporary, "w") as out:
            json.dump(document, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def job_key(table: str, paths: list[str], destination: str) -> str:
    text = json.dumps([table.lower(), destination, paths])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def open_job(directory: Path, table: str, arguments: list[str], paths: list[str], destination: str,
             restart: bool, stdin: InputFile | None = None) -> tuple[Job, bool]:
    """The job these arguments name: the one an earlier run began (checked:
    a file that changed since is refused; files the arguments match now and
    did not then are added), or a new one. Returns (job, resumed)."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if stdin is not None:  # a stream cannot be read again: every run is a job of its own, with no manifest
        return Job(directory, f"stdin{secrets.token_hex(4)}", 1, table, arguments, [stdin], created), False
    # the arguments, not the files they match: a glob that matches one more file tomorrow is still this job
    key = job_key(table, [a if a == "-" else os.path.abspath(a) for a in arguments], destination)
    try:
        earlier = _load(directory / f"{key}.json")
    except ImportRefused:
        if not restart:
            raise
        earlier = {"run": int(time.time())}  # unreadable: a run number no earlier run can have had
    if earlier is None or restart:
        run = earlier["run"] + 1 if earlier is not None else 1
        job = Job(directory, key, run, table, arguments, [identify(p) for p in paths], created)
        job.save()
        return job, False
    files = [InputFile(**f) for f in earlier["files"]]
    complete = set(earlier.get("complete", []))
    job = Job(directory, key, earlier["run"], table, earlier["arguments"], files, earlier["created"], complete,
              {int(k): v for k, v in earlier.get("acknowledged", {}).items()})
    given = set(paths)
    for index, recorded in enumerate(files):
        if recorded.path not in given or not os.path.exists(recorded.path):
            if index in complete:
                continue  # imported whole, then moved away: nothing of it is left to read
            raise ImportRefused(f"{recorded.path} is part of this import (begun {job.created}) but is no longer there; "
                                "put it back to resume, or run with --restart to begin a new import of what is there")
        change = recorded.changed(identify(recorded.path))
        if change is not None:
            raise ImportRefused(f"{recorded.path} changed since this import began reading it ({change}); "
                                "restore it to resume, or run with --restart to import every file again from the start")
    known = {f.path for f in files}
    added = [identify(p) for p in paths if p not in known]
    if added:
        job.files.extend(added)
        job.save()
    return job, True


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ImportRefused(f"cannot read the import's checkpoint {path} ({exc}); remove it, or run with --restart") \
            from None
