"""`cryptosent train`: fine-tune a BERT classifier and write a self-contained artifact."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from cryptosent.common import (
    add_data_mapping_args,
    add_global_args,
    dotted_overrides,
    settings_from_args,
)
from ops.errors import UserError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "train",
        help="fine-tune a BERT classifier on a labeled CSV and write a model artifact",
        description="Fine-tune on the train split, pick the checkpoint on validation macro-F1, "
        "then evaluate the saved artifact on the held-out test split next to a TF-IDF baseline. "
        "See docs/training.md.",
    )
    add_global_args(p)
    p.add_argument("--csv", type=Path, required=True, help="labeled CSV (Kaggle shape)")
    t = p.add_argument_group("training")
    t.add_argument(
        "--base-model",
        dest="train.base_model",
        default=None,
        help="minilm (default, offline), bert-base-uncased (local HF cache only) or a directory",
    )
    t.add_argument(
        "--profile",
        dest="train.profile",
        choices=["full", "quick"],
        default=None,
        help="quick: a CPU-sized run (1500 rows, 3 epochs, max length 64, lr 1e-4); "
        "explicit flags still override",
    )
    t.add_argument("--epochs", dest="train.epochs", type=float, default=None)
    t.add_argument("--batch-size", dest="train.batch_size", type=int, default=None)
    t.add_argument("--eval-batch-size", dest="train.eval_batch_size", type=int, default=None)
    t.add_argument("--lr", dest="train.learning_rate", type=float, default=None)
    t.add_argument("--weight-decay", dest="train.weight_decay", type=float, default=None)
    t.add_argument("--warmup-ratio", dest="train.warmup_ratio", type=float, default=None)
    t.add_argument("--max-length", dest="train.max_length", type=int, default=None)
    t.add_argument("--patience", dest="train.early_stopping_patience", type=int, default=None)
    t.add_argument("--evals-per-epoch", dest="train.evals_per_epoch", type=int, default=None)
    t.add_argument("--max-samples", dest="train.max_samples", type=int, default=None)
    t.add_argument("--seed", dest="train.seed", type=int, default=None)
    t.add_argument("--device", dest="train.device", choices=["auto", "cpu", "cuda"], default=None)
    t.add_argument(
        "--precision",
        dest="train.precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default=None,
    )
    t.add_argument("--threads", dest="train.num_threads", type=int, default=None)
    t.add_argument(
        "--no-class-weights",
        dest="train.class_weighted_loss",
        action="store_const",
        const=False,
        default=None,
        help="plain cross-entropy instead of the class-balanced one",
    )
    t.add_argument(
        "--no-group-by-length",
        dest="train.group_by_length",
        action="store_const",
        const=False,
        default=None,
    )
    t.add_argument("--out", dest="train.out", type=Path, default=None, help="artifact directory")
    t.add_argument(
        "--overwrite",
        dest="train.overwrite",
        action="store_const",
        const=True,
        default=None,
        help="replace a non-empty --out",
    )
    t.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    add_data_mapping_args(p)
    p.set_defaults(handler=run)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (a container stop, `kill`) ends Python without unwinding; as SystemExit it runs
    the cleanup that removes the half-written staging directory."""

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    csv: Path = args.csv
    if not csv.is_file():
        raise UserError(f"CSV {csv} does not exist", hint="pass --csv PATH to a labeled CSV")
    # Imported here: torch and transformers are not `cryptosent --help` work.
    from trainer.train import apply_profile, train

    explicit = {k.split(".", 1)[1] for k in dotted_overrides(args) if k.startswith("train.")}
    settings.train = apply_profile(settings.train, explicit)
    with _sigterm_as_exit():
        outcome = train(settings, csv, progress=not args.no_progress)
    test = outcome.meta.metrics.get("test", {})
    base = outcome.meta.metrics.get("baseline_test", {})
    print(str(outcome.artifact), flush=True)
    print(
        f"model_version={outcome.meta.model_version} test macro_f1={test.get('macro_f1')} "
        f"accuracy={test.get('accuracy')} ece={test.get('ece_before')}->{test.get('ece_after')} "
        f"(T={outcome.meta.temperature:.3f}); baseline macro_f1={base.get('macro_f1')}; "
        f"report: {outcome.artifact / 'report' / 'report.md'} ({outcome.seconds:.0f}s)",
        file=sys.stderr,
        flush=True,
    )
    return 0
