"""The run context every step receives, and the guard that times each step."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu.common import STEP_NAMES, Inputs, LengthTable, Sizes

if TYPE_CHECKING:
    import torch


# -- context and results ------------------------------------------------------------------------


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    quick: bool
    seed: int
    table: LengthTable
    inputs: Inputs
    tokenizer: Any
    encoder: Path | None
    out: Path
    # stream.prep_processes for the serve step: a count, or "auto" (serve's own rule).
    prep_processes: int | str = "auto"
    # Serve processes sharing the card in the serve_procs step.
    serve_procs: int = 3
    ceiling: dict[tuple[str, str, int], float] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng(self.seed * 1000 + salt)

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def free(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()

    def bf16(self) -> torch.dtype:
        """bf16 on CUDA through serve's own resolver; on CPU explicit CPU autocast (serve itself
        never uses half precision on a CPU, but the dry run exercises the path)."""
        import torch

        from stream.inference import resolve_dtype

        if self.cuda:
            dtype = resolve_dtype(self.device, "bf16")
            assert dtype is not None
            return dtype
        return torch.bfloat16


def round_to(value: float, digits: int = 1) -> float:
    return round(float(value), digits)


def run_step(name: str, fn: Callable[[Context], dict[str, Any]], ctx: Context) -> dict[str, Any]:
    print(f"\n== step {STEP_NAMES.index(name) + 1}: {name}", flush=True)
    start = time.perf_counter()
    try:
        result = fn(ctx)
        result.setdefault("status", "ok")
    except Exception as exc:
        result = {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": traceback.format_exc(limit=8)[-4000:],
        }
        print(result["traceback"], file=sys.stderr, flush=True)
    finally:
        ctx.free()
    result["seconds"] = round_to(time.perf_counter() - start, 2)
    print(f"   {name}: {result['status']} in {result['seconds']} s", flush=True)
    return result
