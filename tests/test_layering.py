"""The packages import each other in one direction only (docs/ARCHITECTURE.md, "Packages and who may import whom").

The pipeline's parts (collector, stream_jobs, sinks) share nothing but the record contracts in ``schemas`` and the
library patches in ``compat``, so each can be deployed, tested and changed alone; the stream rules are pure (no
Faust, no Kafka client, no I/O library), so they can be tested without a broker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the project packages it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "compat": set(),
    "collector": {"schemas", "compat"},
    "stream_jobs": {"schemas", "compat"},
    "sinks": {"schemas", "compat"},
    "clickhouse_endpoint": {"schemas", "compat"},  # schemas.logs only: it logs like every other process
    "simulator": {"schemas", "collector", "stream_jobs", "deploy"},
    "deploy": {"schemas", "stream_jobs", "sinks"},
    "delivery": {"schemas", "compat"},
    "dashboard": {"schemas", "compat", "sinks"},  # the web UI over the report SQL: sinks.reports, read-only
    "closedloop": {
        "schemas",
        "compat",
        "collector",
        "stream_jobs",
        "sinks",
        "clickhouse_endpoint",
        "simulator",
        "deploy",
        "delivery",
        "dashboard",
    },
}
# third-party libraries the pure stream rules must not reach: they decide, the runtime moves data
RUNTIME_LIBRARIES = {"faust", "mode", "aiokafka", "kafka", "clickhouse_connect", "httpx", "starlette", "uvicorn"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import in a file, including those inside functions."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(package: str, allowed: set[str], root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top in ALLOWED and top != package and top not in allowed:
                out.append(f"{path.relative_to(root)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file(), f"{package}/ is not a package any more: update ALLOWED"
    assert violations(package, ALLOWED[package]) == []


def test_the_stream_rules_use_no_runtime_library() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "stream_jobs" / "rules").rglob("*.py"))
        for line, module in imports_of(path)
        if module.split(".")[0] in RUNTIME_LIBRARIES or module.startswith("stream_jobs.runtime")
    ]
    assert found == []


def test_every_project_package_is_in_the_table() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(ALLOWED), "a new top-level package needs its row in ALLOWED and in docs/ARCHITECTURE.md"


def test_a_forbidden_import_is_found(tmp_path: Path) -> None:
    # the check itself: a collector module importing the sink is reported with its file and line
    (tmp_path / "collector").mkdir()
    (tmp_path / "collector" / "bad.py").write_text("import json\n\ndef f():\n    from sinks.writer import SinkWriter\n")
    assert violations("collector", ALLOWED["collector"], root=tmp_path) == ["collector/bad.py:4 imports sinks.writer"]
