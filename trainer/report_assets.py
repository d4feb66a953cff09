"""The asset distribution of a CSV, for `data summary` and the training report (issue 12).

Counted over every row read (the raw text column, before any filtering), because extraction needs
the raw text: the text pipeline strips the `$` of cashtags (docs/assets.md). The map is the
`assets` settings section's, the one serve uses, and its version is reported with the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ops.csvio import read_csv_strings, resolve_columns
from ops.settings import DataSettings, Settings
from stream.core.assets import AssetMap, AssetSummary, asset_summary, load_asset_map
from trainer.sources import SourceSpec

TOP = 15


def csv_asset_summary(csv: Path, data: DataSettings, asset_map: AssetMap) -> AssetSummary:
    frame, _ = read_csv_strings(csv)
    cols = resolve_columns(frame, data, need_label=False)
    return asset_summary(frame[cols.text].tolist(), asset_map)


def distribution(summary: AssetSummary, top: int = TOP) -> dict[str, Any]:
    """A JSON-safe view: posts, how many name 0 / 1 / 2+ assets, the most named assets."""
    n0, n1, n2 = summary.by_number
    return {
        "posts": summary.posts,
        "no_asset": n0,
        "one_asset": n1,
        "two_or_more": n2,
        "distinct_assets": len(summary.counts),
        "top": dict(summary.counts.most_common(top)),
    }


def sources_asset_distribution(
    sources: Path | Sequence[SourceSpec], settings: Settings
) -> dict[str, Any]:
    """Per source (one CSV: its file stem), the distribution, with the asset map's version."""
    specs = [SourceSpec(sources, sources.stem)] if isinstance(sources, Path) else list(sources)
    asset_map = load_asset_map(settings.assets.map_path)
    return {
        "map_version": asset_map.version,
        "sources": {
            spec.name: distribution(
                csv_asset_summary(spec.path, spec.data_settings(settings.data), asset_map)
            )
            for spec in specs
        },
    }


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f} %" if total else "n/a"


def asset_markdown(dist: dict[str, Any]) -> list[str]:
    """The report.md section for `sources_asset_distribution`'s output."""
    out = [
        "## Assets",
        "",
        f"Coins named by the raw text of every row read (asset map version "
        f"`{dist.get('map_version')}`, docs/assets.md).",
        "",
        "| source | posts | 0 assets | 1 asset | 2+ assets | most named |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, d in dist.get("sources", {}).items():
        posts = int(d["posts"])
        top = ", ".join(f"{t} {_pct(n, posts)}" for t, n in list(d["top"].items())[:5])
        out.append(
            f"| {name} | {posts} | {_pct(d['no_asset'], posts)} | {_pct(d['one_asset'], posts)} "
            f"| {_pct(d['two_or_more'], posts)} | {top or '-'} |"
        )
    out.append("")
    return out


def asset_lines(summary: AssetSummary, width: int, top: int = 10) -> list[str]:
    """The `data summary` section: shares of 0 / 1 / 2+ assets and the most named assets."""
    posts = summary.posts

    def row(label: str, value: int, share: bool = True) -> str:
        pct = f"  {100.0 * value / posts:5.1f}%" if share and posts else ""
        return f"  {label:<{width}}{value:>8}{pct}"

    out = [f"assets (map version {summary.map_version}, raw text of every row read)"]
    for label, n in zip(("no asset", "one asset", "two or more"), summary.by_number, strict=True):
        out.append(row(label, n))
    out.append(row("distinct assets", len(summary.counts), share=False))
    for ticker, n in summary.counts.most_common(top):
        out.append(row(f"  {ticker}", n))
    return out
