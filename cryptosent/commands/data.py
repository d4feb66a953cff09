"""`cryptosent data summary`: what training would see in a CSV, step by step, before training."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptosent.common import add_data_mapping_args, add_global_args, settings_from_args
from ops.errors import UserError
from ops.settings import TextSettings

# The English filter's test fixture; present in a source checkout, absent from an installed wheel.
FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "non_english_crypto.txt"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "data",
        help="inspect a labeled CSV the way training reads it",
        description="Dataset tools. `summary` prints rows read, what each filtering step "
        "drops, the class balance, the split sizes, the English filter's figures and the "
        "asset distribution.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s: argparse.ArgumentParser = data_sub.add_parser(
        "summary",
        help="rows read, drops per step, class balance, split sizes, English-filter figures, "
        "assets",
        description="Read the CSV exactly as `cryptosent train` would and report every step.",
    )
    add_global_args(s)
    s.add_argument("--csv", type=Path, required=True, help="labeled CSV (Kaggle shape)")
    add_data_mapping_args(s)
    s.add_argument(
        "--max-samples",
        dest="train.max_samples",
        type=int,
        default=None,
        help="the stratified subsample training would use",
    )
    s.add_argument(
        "--lang-backend",
        dest="text.lang_backend",
        choices=["py3langid", "langdetect", "none"],
        default=None,
        help="English filter backend (default py3langid)",
    )
    s.add_argument(
        "--asset-map",
        dest="assets.map_path",
        metavar="TOML",
        type=Path,
        default=None,
        help="asset map for the asset distribution (default: the built-in map)",
    )
    s.set_defaults(handler=run_summary)


def run_summary(args: argparse.Namespace) -> int:
    from stream.core.assets import load_asset_map
    from trainer.data import STEP_LABELS, clean_dataset, split_dataset
    from trainer.report_assets import asset_lines, csv_asset_summary

    settings = settings_from_args(args)
    csv: Path = args.csv
    # Before the slow cleaning: a bad map file fails at once.
    asset_map = load_asset_map(settings.assets.map_path)
    cleaned = clean_dataset(
        csv, settings.data, settings.text, max_samples=settings.train.max_samples
    )
    report = cleaned.report
    out: list[str] = []
    width = max(len(label) for label in STEP_LABELS.values()) + 2

    def row(label: str, value: object, extra: str = "") -> None:
        out.append(f"  {label:<{width}}{value!s:>8}{extra}")

    out.append(f"csv       {csv}")
    out.append(f"encoding  {cleaned.encoding}")
    out.append(f"sha256    {cleaned.csv_sha256}")
    out.append("")
    row("rows read", report.raw_rows)
    for step, removed in report.steps:
        extra = ""
        if step == "conflicting_labels" and removed:
            extra = f"   ({report.conflicting_texts} distinct texts)"
        row(STEP_LABELS.get(step, step), f"-{removed}" if removed else 0, extra)
    row("kept", report.kept)
    out.append("")
    out.append("class balance")
    for name, count in report.class_counts.items():
        share = 100.0 * count / report.kept if report.kept else 0.0
        row(name, count, f"  {share:5.1f}%")
    out.append("")

    split_error: UserError | None = None
    out.append(f"splits (seed {settings.data.split_seed})")
    try:
        prepared = split_dataset(cleaned, settings.data)
    except UserError as exc:
        split_error = exc
        out.append("  n/a: see the error below")
    else:
        for name, size in prepared.split_sizes.items():
            row(name, size)
    out.append("")

    backend = settings.text.lang_backend
    out.append(f"English filter ({backend})")
    non_english = report.removed("non_english")
    if report.pipeline_rows:
        pct = 100.0 * non_english / report.pipeline_rows
        row("this CSV", f"{pct:.2f}%", f"   {non_english} of {report.pipeline_rows} texts")
    else:
        row("this CSV", "n/a")
    row("fixture", *_fixture_figure(settings.text))
    out.append("")
    out += asset_lines(csv_asset_summary(csv, settings.data, asset_map), width)
    print("\n".join(out), flush=True)
    if split_error is not None:
        raise split_error
    return 0


def _fixture_figure(text: TextSettings) -> tuple[str, str]:
    """Share of the packaged non-English fixture the filter skips, or n/a outside a checkout."""
    if text.lang_backend == "none" or not FIXTURE.is_file():
        return "n/a", ""
    from schemas.messages import SkipReason
    from stream.core.text import TextPipeline

    lines = [line for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return "n/a", ""
    results = TextPipeline(text).process_batch(lines)
    skipped = sum(1 for r in results if r.skip_reason is SkipReason.NON_ENGLISH)
    pct = 100.0 * skipped / len(lines)
    return f"{pct:.1f}%", f"   {skipped} of {len(lines)} non-English crypto tweets"
