"""The code's shape: small modules, no import cycles, OpenTelemetry only behind ``telemetry/``, and every
third-party import a declared dependency."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "telemetry")
MAX_MODULE_LINES = 350
LOCAL = {"service", "telemetry", "tests", "bench"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(*folders: str) -> dict[str, Path]:
    return {module_name(path): path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))}


def imported(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, wherever the import sits (``TYPE_CHECKING`` blocks and functions too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def dependency_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports, with the packages whose ``__init__`` such an import runs."""
    known = modules(*PACKAGES)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for target in imported(path):
            if target not in known:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in known and step not in own_packages and step != name:
                    graph[name].add(step)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_is_longer_than_a_few_screens() -> None:
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules(*PACKAGES).items()}

    too_long = {name: lines for name, lines in lengths.items() if lines > MAX_MODULE_LINES}
    assert not too_long, f"split these modules: {too_long}"


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(dependency_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_only_telemetry_talks_to_opentelemetry() -> None:
    offenders = {
        name
        for name, path in modules("service").items()
        if any(target.split(".")[0] == "opentelemetry" for target in imported(path))
    }
    assert offenders == set()


NOT_INSTALLED = {"jose": "python-jose"}
"""Import names of the bench extra's distributions that differ from their names, for runs without that extra
installed (as ``make test`` runs), where the installed metadata cannot say."""


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in extras for r in project["optional-dependencies"][extra])]
    return {_normalize(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def _normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


@pytest.mark.parametrize(
    ("folders", "extras"),
    [(PACKAGES, ()), (("tests",), ("dev",)), (("bench",), ("dev", "bench"))],
    ids=["service", "tests", "bench"],
)
def test_every_third_party_import_is_a_declared_dependency(folders: tuple[str, ...], extras: tuple[str, ...]) -> None:
    declared = _declared(*extras)
    distributions = packages_distributions()
    undeclared: dict[str, list[str]] = {}
    for path in modules(*folders).values():
        for target in imported(path):
            top = target.split(".")[0]
            if top in LOCAL or top in sys.stdlib_module_names or top == "__future__":
                continue
            providers = {_normalize(dist) for dist in distributions.get(top, [NOT_INSTALLED.get(top, top)])}
            if not providers & declared:
                undeclared.setdefault(top, []).append(str(path.relative_to(ROOT)))
    assert undeclared == {}
