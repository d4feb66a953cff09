"""bench/train_cross_domain.py files each base model's cross-domain run under its own key and its
own section of train_quality.md, and rewriting one section leaves the others as they were."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import train_cross_domain as xd  # noqa: E402

SINGLE_SOURCE = "# Training quality\n\nsingle-source table\n"


def test_sections_are_added_once_and_replaced_in_place() -> None:
    md = xd.replace_section(SINGLE_SOURCE, xd.KEY, "## minilm v1\n")
    md = xd.replace_section(md, "cross_domain_bge_small", "## bge v1\n")
    md = xd.replace_section(md, xd.KEY, "## minilm v2\n")
    md = xd.replace_section(md, "cross_domain_bge_small", "## bge v2\n")

    assert md.startswith(SINGLE_SOURCE.rstrip("\n"))
    assert md.count("<!-- cross-domain -->") == 1
    assert md.count("<!-- cross_domain_bge_small -->") == 1
    assert "v1" not in md
    assert md.index("## minilm v2") < md.index("## bge v2")


def test_the_default_key_keeps_the_marker_the_results_file_already_has() -> None:
    committed = (BENCH / "results" / "train_quality.md").read_text(encoding="utf-8")
    assert xd.md_marker(xd.KEY) in committed
