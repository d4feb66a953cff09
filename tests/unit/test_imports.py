"""The layering rule: schemas <- ops <- stream <- trainer, the CLI above all of them; and the pure
core: nothing in stream/core/ imports a Kafka client, threads or a model runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["schemas", "ops", "stream", "trainer", "cryptosent"]
# What each package may import from the project (besides itself).
ALLOWED = {name: set(LAYERS[:i]) for i, name in enumerate(LAYERS)}


# Top-level modules the pure core must never import (directly or under TYPE_CHECKING).
CORE_FORBIDDEN = {"confluent_kafka", "threading", "torch", "onnxruntime", "_thread"}


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def project_imports(path: Path) -> set[str]:
    return top_level_imports(path) & set(LAYERS)


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


def test_the_core_is_pure() -> None:
    files = sorted((ROOT / "stream" / "core").rglob("*.py"))
    assert len(files) >= 8, files
    bad = {str(f.relative_to(ROOT)): sorted(top_level_imports(f) & CORE_FORBIDDEN) for f in files}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"stream/core must stay pure (no Kafka client, threads, torch): {bad}"


def test_purity_checker_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text(
        "import threading\nfrom confluent_kafka import Consumer\n"
        "if TYPE_CHECKING:\n    import torch.nn\n"
    )
    assert top_level_imports(sample) & CORE_FORBIDDEN == {"threading", "confluent_kafka", "torch"}
