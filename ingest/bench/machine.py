"""Where a bench ran: the machine and the versions of everything measured,
so that a number in results.json can be compared with someone else's."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from ingest.hotpath import hot_path_compiled

PACKAGES = ("ingest", "pyarrow", "duckdb", "numpy", "uvloop", "httptools", "Cython")


def _field(path: str, key: str, separator: str) -> str | None:
    """The value of the first `key<separator>value` line of a /proc-style file."""
    try:
        for line in Path(path).read_text().splitlines():
            name, found, value = line.partition(separator)
            if found and name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return None


def machine() -> dict:
    mem_kib = _field("/proc/meminfo", "MemTotal", ":")
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _field("/proc/cpuinfo", "model name", ":") or platform.processor() or None,
        "memory_bytes": int(mem_kib.split()[0]) * 1024 if mem_kib else None,
        "os": _field("/etc/os-release", "PRETTY_NAME", "=") or platform.system(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name.lower()] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name.lower()] = None
    if found["ingest"] is None:  # running from a source tree that is not installed
        import ingest

        found["ingest"] = ingest.__version__
    found["cython_compiled"] = hot_path_compiled()
    return found


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load: other work on the machine skews every figure."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None
