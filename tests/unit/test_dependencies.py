"""Every third-party package the code imports is a declared dependency, and the lock files pin them."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).parents[2]
FIRST_PARTY = {"bot", "tests", "bench"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement ("matrix-nio[e2e]>=0.26")."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {_name(r) for r in requirements}


def _top_level_imports(folder: Path) -> dict[str, Path]:
    """Absolute imports' top-level module names, each with one file that imports it."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path.relative_to(ROOT))
    return found


def _undeclared(folders: list[str], declared: set[str]) -> list[str]:
    distributions = packages_distributions()
    problems = []
    for folder in folders:
        for module, path in _top_level_imports(ROOT / folder).items():
            if module in sys.stdlib_module_names or module in FIRST_PARTY:
                continue
            names = {_name(d) for d in distributions.get(module, [])}
            if not names:
                problems.append(f"{path}: imports {module!r}, which no installed package provides")
            elif not names & declared:
                problems.append(f"{path}: imports {module!r} from {sorted(names)}, "
                                "not declared in pyproject.toml")
    return problems


def test_the_bot_imports_only_declared_runtime_dependencies():
    assert _undeclared(["bot"], _declared()) == []


def test_tests_and_benchmarks_import_only_declared_dependencies():
    assert _undeclared(["tests", "bench"], _declared("dev")) == []


def test_the_checker_catches_an_undeclared_import():
    # nio brings peewee with it, but the bot imports peewee itself: it must say so.
    assert "peewee" in _declared()
    assert _undeclared(["bot"], _declared() - {"peewee"}) != []


def _locked(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {_name(m[0]): m[1] for m in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)}


def test_lock_files_pin_every_declared_dependency_with_hashes():
    for lock, extras in (("runtime.txt", ()), ("dev.txt", ("dev",))):
        locked = _locked(lock)
        assert _declared(*extras) <= set(locked), lock
        text = (ROOT / "requirements" / lock).read_text()
        assert text.count("--hash=sha256:") >= len(locked), f"{lock}: a pin without a hash"
    runtime, dev = _locked("runtime.txt"), _locked("dev.txt")
    assert {name: dev[name] for name in runtime} == runtime  # the tests run what is deployed
    assert runtime["matrix-nio"].startswith("0.26.")  # the range nio_tuning was tested on
