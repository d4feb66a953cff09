"""Preparation before and after a change, in one run on the same tweets.

Loads `stream/core/text.py` and `lang.py` as they were at --before (a git revision) next to the
working tree's, then measures both with bench/backends.py's `prep` (cold cache, fresh pipelines
each round, per chunk the least CPU time), at 1 and 2 workers, alternating before/after so that
a neighbour's load falls on both. Quote the ratios: the machine is shared.
    nice -n 10 .venv/bin/python bench/prep_ab.py --before 867ad5f [--n 4000]
Writes bench/results/prep_ab.json and .md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends
from backends import DEFAULT_CSV, RESULTS, ROOT, prep

from ops.settings import TextSettings


def load_before(rev: str) -> Any:
    """TextPipeline as of `rev`, imported as the package `prep_before`."""
    pkg = Path(tempfile.mkdtemp()) / "prep_before"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    for name in ("text", "lang"):
        src = subprocess.run(
            ["git", "show", f"{rev}:stream/core/{name}.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (pkg / f"{name}.py").write_text(src.replace("stream.core.lang", "prep_before.lang"))
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module("prep_before.text").TextPipeline


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision of the baseline")
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=2, help="before/after alternations")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    import pandas as pd

    raws = pd.read_csv(args.csv)["text"].astype(str).tolist()[: args.n]
    config = TextSettings()
    pipelines = {"before": load_before(args.before), "after": vars(backends)["TextPipeline"]}
    load_before_run = list(os.getloadavg())
    best: dict[str, dict[int, dict[str, Any]]] = {"before": {}, "after": {}}
    for repeat in range(args.repeats):
        order = ["before", "after"] if repeat % 2 == 0 else ["after", "before"]
        for workers in (1, 2):
            for variant in order:
                vars(backends)["TextPipeline"] = pipelines[variant]
                run = prep(config, raws, workers, rounds=2)
                kept = best[variant].get(workers)
                if kept is None or run["tweets_per_cpu_s"] > kept["tweets_per_cpu_s"]:
                    best[variant][workers] = run
                print(variant, workers, run["tweets_per_cpu_s"], file=sys.stderr, flush=True)
    vars(backends)["TextPipeline"] = pipelines["after"]
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/prep_ab.py " + " ".join(sys.argv[1:]),
        "before": args.before,
        "after": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip(),
        "csv": args.csv.name,
        "tweets": len(raws),
        "distinct_share": round(len(set(raws)) / len(raws), 4),
        "cores": os.cpu_count(),
        "load": [load_before_run, list(os.getloadavg())],
        "goal_tweets_per_s_per_core": 5000,
        "runs": {v: [best[v][w] for w in (1, 2)] for v in best},
        "speedup_cpu": {
            str(w): round(
                best["after"][w]["tweets_per_cpu_s"] / best["before"][w]["tweets_per_cpu_s"], 3
            )
            for w in (1, 2)
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prep_ab.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (args.out / "prep_ab.md").write_text(markdown(out), encoding="utf-8")
    print(markdown(out))
    return 0


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Preparation before and after (one run)",
        "",
        f"`{r['command']}` at {r['when']}: {r['tweets']} raw tweets of {r['csv']} "
        f"({r['distinct_share']:.1%} distinct), default text settings, cold cache; per variant "
        "and worker count the best of the alternations (each the per-chunk least CPU time over "
        f"2 rounds). Baseline {r['before']}, after {r['after']}.",
        "",
        "| variant | workers | tweets per CPU-second (per core) | CPU µs/tweet | wall tweets/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant in ("before", "after"):
        for run in r["runs"][variant]:
            lines.append(
                f"| {variant} | {run['workers']} | {run['tweets_per_cpu_s']} | "
                f"{run['cpu_us_per_tweet']} | {run['wall_tweets_per_s']} |"
            )
    lines += [
        "",
        f"After / before, tweets per CPU-second: {r['speedup_cpu']['1']}× at 1 worker, "
        f"{r['speedup_cpu']['2']}× at 2 workers. Goal: {r['goal_tweets_per_s_per_core']} per "
        f"core. Load average start/end: {r['load'][0][0]:.2f} / {r['load'][1][0]:.2f} on "
        f"{r['cores']} cores (shared machine: quote the ratios).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
