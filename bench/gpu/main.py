"""Environment, command line and the run: `python bench/gpu_bench.py` lands here."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu.common import (
    DATA_DIR,
    DEFAULT_OUT,
    FULL,
    QUICK,
    RUN_ORDER,
    STEP_NAMES,
    Inputs,
    LengthTable,
    load_tokenizer,
    stocktwits_inputs,
    synthetic_inputs,
)
from gpu.context import Context, round_to, run_step
from gpu.correctness import step_correctness
from gpu.inference import step_inference
from gpu.memory import step_memory
from gpu.models import export_encoder, find_encoder
from gpu.results import evaluate_targets, render_markdown, write_results
from gpu.serve import step_serve
from gpu.serve_procs import step_serve_procs
from gpu.training import step_training

if TYPE_CHECKING:
    import torch


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def environment(
    device: torch.device, quick: bool, inputs: Inputs, encoder: Path | None
) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if quick else "full",
        "device": device.type,
        "device_name": cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "inputs": inputs.source,
        "encoder": str(encoder) if encoder else None,
        "argv": sys.argv[1:],
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            cuda=torch.version.cuda,
            gpu_memory_mib=round(props.total_memory / 2**20),
            sm_count=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


STEPS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "correctness": step_correctness,
    "training": step_training,
    "inference": step_inference,
    "memory": step_memory,
    "serve": step_serve,
    "serve_procs": step_serve_procs,
}


def parse_steps(value: str) -> list[str]:
    """'all', or names / 1-based numbers separated by commas."""
    if value == "all":
        return list(RUN_ORDER)
    chosen: set[str] = set()
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name = STEP_NAMES[int(part) - 1] if part.isdigit() else part
        if name not in STEP_NAMES:
            raise argparse.ArgumentTypeError(f"unknown step {part!r}; choose from {STEP_NAMES}")
        chosen.add(name)
    return [s for s in RUN_ORDER if s in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and sizes (CPU dry run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=parse_steps, default=list(RUN_ORDER))
    parser.add_argument("--inputs", choices=["auto", "synthetic", "stocktwits"], default="auto")
    parser.add_argument(
        "--encoder", type=Path, default=None, help="pretrained encoder dir (step 1)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve-tweets", type=int, default=None)
    parser.add_argument("--serve-batch-size", type=int, default=None)
    parser.add_argument(
        "--serve-procs",
        type=int,
        default=None,
        help="serve processes sharing the card in step 6 (default 3; 2 with --quick)",
    )
    parser.add_argument(
        "--prep-processes",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="text-cleaning processes in the serve step (serve's stream.prep_processes)",
    )
    parser.add_argument(
        "--export-encoder",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the MiniLM encoder (bf16, 10k vocab) for the device machine and exit",
    )
    args = parser.parse_args(argv)
    if args.export_encoder is not None:
        path = export_encoder(args.export_encoder)
        size = sum(p.stat().st_size for p in path.iterdir()) / 2**20
        print(f"exported the MiniLM encoder to {path} ({size:.1f} MiB)")
        return 0

    import torch

    from stream.inference import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = QUICK if args.quick else FULL
    sizes = dataclasses.replace(
        base,
        serve_tweets=args.serve_tweets or base.serve_tweets,
        serve_batch_size=args.serve_batch_size or base.serve_batch_size,
    )
    table = LengthTable.load()
    encoder = find_encoder(args.encoder)
    tokenizer = load_tokenizer(encoder)
    rng = np.random.default_rng(args.seed)
    inputs: Inputs | None = None
    if args.inputs in ("auto", "stocktwits"):
        inputs = stocktwits_inputs(tokenizer, DATA_DIR)
        if inputs is None and args.inputs == "stocktwits":
            parser.error(f"--inputs stocktwits needs {DATA_DIR} and a full-vocabulary tokenizer")
    if inputs is None:
        inputs = synthetic_inputs(table, 20_000, rng)
    ctx = Context(
        device=device,
        sizes=sizes,
        quick=args.quick,
        seed=args.seed,
        table=table,
        inputs=inputs,
        tokenizer=tokenizer,
        encoder=encoder,
        out=args.out,
        prep_processes=args.prep_processes,
        serve_procs=args.serve_procs if args.serve_procs is not None else 2 if args.quick else 3,
    )
    started = time.perf_counter()
    results: dict[str, Any] = {
        "meta": environment(device, args.quick, inputs, encoder),
        "steps": {},
        "targets": [],
    }
    print(f"gpu_bench: {results['meta']['device_name']} ({device}), {results['meta']['mode']} mode")
    print(f"inputs: {inputs.source}")
    for name in args.steps:
        results["steps"][name] = run_step(name, STEPS[name], ctx)
        results["targets"] = evaluate_targets(results["steps"], ctx.cuda)
        results["wall_seconds"] = round_to(time.perf_counter() - started, 1)
        write_results(results, args.out)
    json_path, md_path = write_results(results, args.out)
    print("\n" + render_markdown(results))
    print(f"wrote {json_path} and {md_path}")
    failed = [n for n, s in results["steps"].items() if s["status"] == "error"]
    return 1 if failed else 0
