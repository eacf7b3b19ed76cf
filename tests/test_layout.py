"""The tree shows the data flow, and the import rules that keep it readable hold: the write path and the
read path never import each other, the product never imports the local stack or the simulator, and
each folder says its job in its `__init__`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stack import REPO_ROOT

PRODUCT = ("ingestor", "projections", "schemas", "plumbing", "service")
FORBIDDEN = {
    "ingestor": ("projections", "service", "stack", "stripe_sim"),
    "projections": ("ingestor", "service", "stack", "stripe_sim"),
    "schemas": ("ingestor", "projections", "plumbing", "service", "stack", "stripe_sim"),
    "plumbing": ("ingestor", "projections", "service", "stack", "stripe_sim"),
    "service": ("stack", "stripe_sim"),
}
# The one optional import of the local stack: `ingestor up/down/status/demo` where it is installed.
OPTIONAL = {("service/cli.py", "stack.commands")}


def imported_modules(path: Path) -> list[str]:
    """Returns every module `path` imports, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


@pytest.mark.parametrize("package", PRODUCT)
def test_a_package_imports_only_what_its_place_in_the_flow_allows(package: str) -> None:
    broken = []
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        relative = str(path.relative_to(REPO_ROOT))
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in FORBIDDEN[package] and (relative, module) not in OPTIONAL:
                broken.append(f"{relative} imports {module}")
    assert broken == []


def test_every_folder_says_its_job_in_one_docstring() -> None:
    for package in PRODUCT:
        for init in (REPO_ROOT / package).rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc, f"{init.relative_to(REPO_ROOT)} has no docstring"


def test_the_write_path_reads_in_flow_order() -> None:
    stages = sorted(p.name for p in (REPO_ROOT / "ingestor").iterdir() if (p / "__init__.py").exists())
    assert stages == ["connections", "control", "envelope", "receiver", "sources", "stripe_api"]
    read_stages = sorted(p.name for p in (REPO_ROOT / "projections").iterdir() if (p / "__init__.py").exists())
    assert read_stages == ["handlers", "projector", "read"]
