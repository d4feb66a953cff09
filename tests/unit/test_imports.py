"""The layering rule: schemas <- ops <- stream <- trainer, the CLI above all of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["schemas", "ops", "stream", "trainer", "cryptosent"]
# What each package may import from the project (besides itself).
ALLOWED = {name: set(LAYERS[:i]) for i, name in enumerate(LAYERS)}


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_imports_flow_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = {
        str(f.relative_to(ROOT)): sorted(project_imports(f) - ALLOWED[package] - {package})
        for f in files
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"forbidden imports (allowed from {package}: {sorted(ALLOWED[package])}): {bad}"


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("from trainer.data import x\nimport stream.text\n")
    assert project_imports(sample) == {"trainer", "stream"}
