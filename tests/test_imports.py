"""``api`` and ``compute`` never import each other (spec section 1); both meet in ``shared``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level package of every absolute import in ``package``, by file (type-checking imports too)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("api", "compute"), ("compute", "api"), ("shared", "api"),
                                                    ("shared", "compute")])
def test_package_does_not_import(package: str, forbidden: str) -> None:
    files = imported_packages(package)
    assert len(files) > 3 and any("redis" in imports for imports in files.values())  # it sees real imports
    offenders = sorted(name for name, imports in files.items() if forbidden in imports)
    assert offenders == [], f"{package} imports {forbidden} in {offenders}"
