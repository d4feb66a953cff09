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


def _workers(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError("workers must be >= 0 (0 = in this process)")
    return n


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "train",
        help="fine-tune a BERT classifier on a labeled CSV and write a model artifact",
        description="Fine-tune on the train split, pick the checkpoint on validation macro-F1, "
        "then evaluate the saved artifact on the held-out test split next to a TF-IDF baseline. "
        "See docs/training.md.",
    )
    add_global_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--csv",
        action="append",
        metavar="PATH[:OPTIONS]",
        help="a labeled CSV; repeat for several sources. OPTIONS override the column flags for "
        "this CSV: text=COL,label=COL,map=RAW=Canonical;RAW=Canonical,name=NAME "
        "(e.g. --csv 'fin.csv:label=sentiment,map=Bullish=Positive;Bearish=Negative,name=fin')",
    )
    src.add_argument(
        "--data-spec",
        type=Path,
        metavar="YAML",
        help="the sources in a YAML file: sources: [{path, name, text, label, map}]",
    )
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
        choices=["full", "quick", "seed"],
        default=None,
        help="quick: a CPU-sized run (1500 rows, 3 epochs, max length 64, lr 1e-4); seed: the "
        "original notebook's recipe (bert-base-uncased, lr 1e-4, batch 25, 3 epochs; for a "
        "GPU); explicit flags still override",
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
        "--source-balance",
        dest="train.source_balance",
        choices=["none", "weight"],
        default=None,
        help="several sources: weight each row's loss so every source counts the same in total",
    )
    t.add_argument("--label-smoothing", dest="train.label_smoothing", type=float, default=None)
    t.add_argument(
        "--layer-lr-decay",
        dest="train.layer_lr_decay",
        type=float,
        default=None,
        help="each encoder layer learns this many times slower than the one above (1 = off)",
    )
    t.add_argument(
        "--head-lr-scale",
        dest="train.head_lr_scale",
        type=float,
        default=None,
        help="the new classifier (and pooler) learn at lr times this (1 = off)",
    )
    t.add_argument(
        "--ema-decay",
        dest="train.ema_decay",
        type=float,
        default=None,
        help="evaluate and save a moving average of the weights with this decay (0 = off)",
    )
    t.add_argument(
        "--cashtags",
        dest="text.cashtags",
        choices=["ticker", "remove", "keep"],
        default=None,
        help="text pipeline: $ETH.X -> ETH (ticker, default), dropped, or kept as is",
    )
    t.add_argument(
        "--emojis",
        dest="text.emojis",
        choices=["demojize", "remove", "keep"],
        default=None,
        help="text pipeline: emoji -> :name: words (demojize, default), dropped, or kept",
    )
    t.add_argument(
        "--cross-domain",
        action="store_true",
        help="several sources: also fine-tune one model per leave-one-source-out and "
        "single-source training set and report the train-on-X -> test-on-Y matrix "
        "(as many extra trainings as there are such sets)",
    )
    t.add_argument(
        "--cross-domain-workers",
        type=_workers,
        default=0,
        metavar="N",
        help="train the --cross-domain models in N worker processes alongside the main one "
        "(0, the default: in this process, one after another, before it)",
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
    # Imported here: torch and transformers are not `cryptosent --help` work.
    from trainer.profiles import apply_profile
    from trainer.sources import load_data_spec, parse_source
    from trainer.train import train

    specs = (
        load_data_spec(args.data_spec) if args.data_spec else [parse_source(v) for v in args.csv]
    )
    for spec in specs:
        if not spec.path.is_file():
            raise UserError(
                f"CSV {spec.path} does not exist", hint="pass --csv PATH to a labeled CSV"
            )

    explicit = {k.split(".", 1)[1] for k in dotted_overrides(args) if k.startswith("train.")}
    settings.train = apply_profile(settings.train, explicit)
    with _sigterm_as_exit():
        outcome = train(
            settings,
            specs,
            progress=not args.no_progress,
            cross_domain=args.cross_domain,
            cross_domain_workers=args.cross_domain_workers,
        )
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
    for name, m in outcome.meta.metrics.get("per_source", {}).items():
        print(
            f"  {name}: test macro_f1={m['macro_f1']} baseline={m['baseline_macro_f1']} "
            f"ece_after={m['ece_after']}",
            file=sys.stderr,
            flush=True,
        )
    return 0
