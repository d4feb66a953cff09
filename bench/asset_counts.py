"""Asset distribution and extraction speed over the shared StockTwits replay and the labeled sample.

Per input: posts, posts per asset, the share of posts naming 0 / 1 / 2+ assets, and the
extraction cost in µs per post (best of --repeats passes over the whole file, one thread, tables
built beforehand as serve builds them once). On the labeled sample it also reports precision and
recall against the hand labels (micro over (post, asset) pairs).

Writes bench/results/asset_counts.json and .md:
    nice -n 10 .venv/bin/python bench/asset_counts.py [--csv PATH ...] [--asset-map PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.core.assets import AssetExtractor, load_asset_map  # noqa: E402

SHARED = [ROOT / "shared" / "data", ROOT.parent / "shared" / "data"]
DEFAULT_REPLAY = "stocktwits_eth_2022_unlabeled.csv"
# Headlines about stocks: how often extraction finds a coin where (nearly) none is.
NON_CRYPTO = "twitter_financial_news.csv"
LABELED = ROOT / "tests" / "fixtures" / "assets_labeled.csv"
RESULTS = ROOT / "bench" / "results"


def find_shared(name: str) -> Path | None:
    return next((d / name for d in SHARED if (d / name).is_file()), None)


def read_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return [row["text"] or "" for row in csv.DictReader(f)]


def time_extraction(
    extractor: AssetExtractor, texts: list[str], repeats: int
) -> tuple[float, float]:
    """Best-of-`repeats` µs per post: wall clock, and this thread's CPU time (which other jobs
    on a shared machine inflate much less)."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        for text in texts:
            extractor.extract(text)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.thread_time() - start_cpu)
    return wall / len(texts) * 1e6, cpu / len(texts) * 1e6


def measure(extractor: AssetExtractor, path: Path, repeats: int) -> dict[str, Any]:
    texts = read_texts(path)
    summary = extractor.summary(texts)
    wall, cpu = time_extraction(extractor, texts, repeats)
    return {
        "path": path.name,
        "posts": summary.posts,
        "counts": dict(summary.counts.most_common()),
        "posts_with_0": summary.by_number[0],
        "posts_with_1": summary.by_number[1],
        "posts_with_2_or_more": summary.by_number[2],
        "share_0": round(summary.share(0), 4),
        "share_1": round(summary.share(1), 4),
        "share_2_or_more": round(summary.share(2), 4),
        "us_per_post_wall": round(wall, 2),
        "us_per_post_cpu": round(cpu, 2),
        "mean_chars": round(sum(map(len, texts)) / max(len(texts), 1), 1),
    }


def labeled_quality(extractor: AssetExtractor, path: Path) -> dict[str, Any]:
    tp = fp = fn = 0
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            gold = set(row["assets"].split())
            got = set(extractor.extract(row["text"]))
            tp, fp, fn = tp + len(got & gold), fp + len(got - gold), fn + len(gold - got)
    return {
        "pairs_labeled": tp + fn,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Asset counts",
        "",
        f"{result['when']} · {result['machine']} · asset map version {result['map_version']} "
        f"({result['map_source']})",
        "",
        f"Command: `{result['command']}`",
        "",
        "| input | posts | 0 assets | 1 asset | 2+ assets | µs/post CPU | µs/post wall "
        "| mean chars |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in result["inputs"]:
        lines.append(
            f"| {run['path']} | {run['posts']} | {run['share_0']:.1%} | {run['share_1']:.1%} | "
            f"{run['share_2_or_more']:.1%} | {run['us_per_post_cpu']} | "
            f"{run['us_per_post_wall']} | {run['mean_chars']} |"
        )
    for run in result["inputs"]:
        lines += ["", f"Posts per asset in {run['path']} (top 25):", ""]
        lines += ["| asset | posts | share |", "| --- | ---: | ---: |"]
        for ticker, n in list(run["counts"].items())[:25]:
            lines.append(f"| {ticker} | {n} | {n / run['posts']:.1%} |")
    quality = result.get("labeled_quality")
    if quality:
        lines += [
            "",
            f"Against the hand labels ({quality['pairs_labeled']} labeled (post, asset) pairs): "
            f"precision {quality['precision']:.4f}, recall {quality['recall']:.4f} "
            f"({quality['false_positives']} false positives, "
            f"{quality['false_negatives']} false negatives).",
        ]
    lines += [
        "",
        "µs/post: best of the repeated passes over the whole file, one Python thread, the "
        "extractor's tables built beforehand (serve builds them once); CPU is the thread's CPU "
        "time, wall the elapsed time. Shared, noisy machine: load average "
        f"{result['load_average']} at the start.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, action="append", help="CSV with a text column")
    parser.add_argument("--asset-map", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    paths: list[Path] = list(args.csv or [])
    if not paths:
        replay = find_shared(DEFAULT_REPLAY)
        if replay is None:
            print(
                f"error: {DEFAULT_REPLAY} not found in ../shared/data; pass --csv", file=sys.stderr
            )
            return 2
        paths = [replay, LABELED]
        news = find_shared(NON_CRYPTO)
        if news is not None:
            paths.append(news)
    for path in paths:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2

    asset_map = load_asset_map(args.asset_map)
    extractor = AssetExtractor(asset_map)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()} · Python "
        f"{platform.python_version()}",
        "command": " ".join(["python bench/asset_counts.py", *sys.argv[1:]]),
        "map_version": asset_map.version,
        "map_source": asset_map.source,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "inputs": [measure(extractor, path, args.repeats) for path in paths],
    }
    if LABELED in paths:
        result["labeled_quality"] = labeled_quality(extractor, LABELED)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "asset_counts.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "asset_counts.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
