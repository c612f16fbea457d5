"""The dependency rules, read from the source: the core imports only the
hot path, the schema, backoff, the wire protocol and itself; the client
only the standard library, the wire protocol and backoff."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ingest"
CORE_MAY_IMPORT = ("ingest.core", "ingest.hotpath", "ingest.schema", "ingest.backoff", "ingest.protocol")
CLIENT_MAY_IMPORT = ("ingest.client", "ingest.protocol", "ingest.backoff")
CLIENT_OPTIONAL = ("orjson",)  # a faster JSON encoder, used when installed (imported under `except ImportError`)
CORE_THIRD_PARTY = ("numpy", "pyarrow")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, bool]]:
    """(module, optional) for each import in the file; relative ones made absolute;
    optional: inside a `try` that catches ImportError."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    optional_nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            optional_nodes.update(id(n) for statement in node.body for n in ast.walk(statement))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in optional_nodes) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((name, id(node) in optional_nodes))
    return found


def within(name: str, prefixes) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def files(package: str) -> list[Path]:
    root = PACKAGE / package
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


@pytest.mark.parametrize("path", files("core"), ids=lambda p: p.name)
def test_the_core_imports_nothing_from_sources_sinks_durability_or_the_server(path):
    wrong = [name for name, _ in imports(path)
             if (name.startswith("ingest") and not within(name, CORE_MAY_IMPORT))
             or not (name.startswith("ingest") or name.split(".")[0] in sys.stdlib_module_names
                     or within(name, CORE_THIRD_PARTY))]
    assert not wrong, f"{module_name(path)} imports {wrong}: the core talks to them through ingest.core.ports"


@pytest.mark.parametrize("path", files("client"), ids=lambda p: p.name)
def test_the_client_imports_only_the_standard_library_protocol_and_backoff(path):
    wrong = [name for name, optional in imports(path)
             if not (within(name, CLIENT_MAY_IMPORT) or name.split(".")[0] in sys.stdlib_module_names
                     or (optional and within(name, CLIENT_OPTIONAL)))]
    assert not wrong, f"{module_name(path)} imports {wrong}: the client ships without the server's dependencies"


def test_the_rules_see_a_forbidden_import(tmp_path):
    """The parser catches plain, from- and relative imports (so the tests above can fail)."""
    core = tmp_path / "ingest" / "core"
    core.mkdir(parents=True)
    sample = core / "sample.py"
    sample.write_text("import ingest.sinks.registry\nfrom ingest.durability import wal\nfrom ..server import app\n"
                      "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n")
    assert imports(sample, tmp_path / "ingest") == [("ingest.sinks.registry", False), ("ingest.durability", False),
                                                    ("ingest.server", False), ("orjson", True)]
