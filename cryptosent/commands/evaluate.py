"""`cryptosent evaluate`: score any model artifact on any labeled CSV (cross-dataset)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryptosent.common import add_data_mapping_args, add_global_args, settings_from_args
from ops.errors import UserError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate",
        help="evaluate a model artifact on every labeled row of a CSV",
        description="Clean the CSV with the artifact's own text settings, drop Neutral rows, "
        "predict with the serving loader and write metrics.json, report.md and figures.",
    )
    add_global_args(p)
    p.add_argument("--model", type=Path, required=True, help="artifact directory")
    p.add_argument("--csv", type=Path, required=True, help="labeled CSV (Kaggle shape)")
    p.add_argument(
        "--out", type=Path, default=None, help="report directory (default MODEL/report-<csv stem>)"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None)
    p.add_argument("--batch-size", type=int, default=64)
    add_data_mapping_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not args.csv.is_file():
        raise UserError(f"CSV {args.csv} does not exist")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    from trainer.evaluate import evaluate_artifact

    result = evaluate_artifact(
        args.model,
        args.csv,
        settings.data,
        out_dir=args.out,
        device=args.device or settings.model.device,
        precision=args.precision or settings.model.precision,
        batch_size=args.batch_size,
    )
    m = result.metrics["model"]
    print(str(result.report_dir), flush=True)
    print(
        f"rows={m['n']} macro_f1={m['macro_f1']} accuracy={m['accuracy']} "
        f"ece={m['calibration']['ece_after']}; report: {result.report_dir / 'report.md'}",
        file=sys.stderr,
        flush=True,
    )
    return 0
