"""`cryptosent export`: write the artifact's ONNX files (fp32, and int8 when it passes the gate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryptosent.common import add_global_args, settings_from_args
from ops.errors import UserError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "export",
        help="export a model artifact to ONNX (fp32, and int8 when it passes the quality gate)",
        description="Export to ONNX, fuse with ORT's transformer optimizer, try int8 "
        "quantizations, score each file against fp32 torch on the artifact's own test split "
        "(rebuilt from --csv, the CSV it was trained on) and keep what passes the gate. "
        "Writes model.onnx, model.int8.onnx, their sha256 in cryptosent.json and "
        "report/onnx_gate.md. See docs/performance.md.",
    )
    add_global_args(p)
    p.add_argument("--model", type=Path, required=True, help="artifact directory")
    p.add_argument("--csv", type=Path, required=True, help="the CSV the model was trained on")
    p.add_argument(
        "--threads", type=int, default=1, help="intra-op threads for the timing (default 1)"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not args.csv.is_file():
        raise UserError(f"CSV {args.csv} does not exist")
    if args.threads < 1:
        raise UserError("--threads must be at least 1")
    from stream.artifact import read_meta, write_meta
    from trainer.export import GATE_FILE, export_artifact, gate_inputs_from_csv

    meta = read_meta(args.model)
    inputs = gate_inputs_from_csv(meta, args.csv, settings)
    updated = export_artifact(
        args.model,
        meta,
        inputs,
        threads=args.threads,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    write_meta(args.model, updated)
    shipped = ", ".join(
        f"{v}={e.file} (macro-F1 {e.macro_f1_delta:+.4f}, agreement {e.agreement:.4f})"
        for v, e in updated.onnx.items()
    )
    print(str(args.model), flush=True)
    print(
        f"shipped: {shipped or 'nothing'}; report: {args.model / 'report' / GATE_FILE}",
        file=sys.stderr,
        flush=True,
    )
    return 0
