"""`train`: prepare the data, fine-tune, write the artifact, evaluate it as it will be served.

The artifact is assembled in a temporary directory next to `--out` and renamed into place only
once it is complete (weights, tokenizer, cryptosent.json with the fitted temperature and test
metrics, train_log.jsonl, report/), so a crash never leaves a half artifact where serving looks.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ops.errors import UserError
from ops.settings import Settings
from stream.artifact import (
    META_FILE,
    PICKLE_SUFFIXES,
    WEIGHTS_FILE,
    ArtifactMeta,
    DataFingerprint,
    library_versions,
    new_model_version,
    write_meta,
)
from trainer.dataset import SplitData, load_splits
from trainer.sources import SourceSpec

LOG_FILE = "train_log.jsonl"
REPORT_DIR = "report"


@dataclass
class TrainOutcome:
    artifact: Path
    meta: ArtifactMeta
    metrics: dict[str, Any]
    seconds: float


# -- output directory -----------------------------------------------------------------------------


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse early, before any work, to write into an existing non-empty directory."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"output directory {out} already exists and is not empty",
            hint="pass --overwrite to replace it or choose another --out",
        )


@contextmanager
def staging_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of `out`; renamed onto `out` when the block succeeds, removed when it
    fails. The sibling (same filesystem) makes the final rename atomic."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir()
    old: Path | None = None
    try:
        yield tmp
        # Again at the end: something may have appeared at `out` during a long run.
        check_output_dir(out, overwrite)
        if out.exists():
            if any(out.iterdir()):
                old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(3)}"
                out.rename(old)
            else:
                out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            old.rename(out)
            old = None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- training -------------------------------------------------------------------------------------


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Exactly as `SentimentModel.encode` does at serving: truncation, no padding, no
    token_type_ids."""
    if not texts:
        return []
    out = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return [list(ids) for ids in out["input_ids"]]


def _check_trainable(data: SplitData) -> None:
    for name, rows in (("train", data.train), ("validation", data.val), ("test", data.test)):
        if not rows:
            raise UserError(f"the {name} split is empty", hint="the CSV needs more labeled rows")
    present = {y for _, y in data.train}
    if len(present) < 2:
        raise UserError(
            "the training split holds one class only; a classifier needs Positive and Negative rows"
        )


def train(
    settings: Settings,
    sources: Path | Sequence[SourceSpec],
    *,
    progress: bool = True,
    cross_domain: bool = False,
    cross_domain_workers: int = 0,
) -> TrainOutcome:
    """Fine-tune per `settings.train` on one CSV or several sources and write the artifact at
    `settings.train.out`. `cross_domain` (several sources only) also fine-tunes one model per
    leave-one-out / single-source training set and puts its test scores in the report."""
    started = time.perf_counter()
    cfg = settings.train
    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite)
    # The model before the data: a base model that is not available offline is reported at
    # once, not after a minute of cleaning and language detection.
    from trainer.base_model import resolve_base_model

    resolve_base_model(cfg.base_model)
    data = load_splits(sources, settings, max_samples=cfg.max_samples)
    _check_trainable(data)
    from trainer.report_assets import sources_asset_distribution

    assets = sources_asset_distribution(sources, settings)
    models: Callable[[], list[dict[str, Any]]] | None = None
    if cross_domain and len(data.sources) > 1:
        from trainer.crossdomain import cross_domain_models

        models = cross_domain_models(
            settings, data, progress=progress, workers=cross_domain_workers
        )
    try:
        outcome = train_on(
            settings,
            data,
            progress=progress,
            cross_domain_models=models,
            asset_distribution=assets,
        )
    except BaseException:
        cancel = getattr(models, "cancel", None)
        if cancel is not None:
            cancel()
        raise
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome


def train_on(
    settings: Settings,
    data: SplitData,
    *,
    progress: bool,
    cross_domain_models: Callable[[], list[dict[str, Any]]] | None = None,
    asset_distribution: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Fine-tune on prepared data and write the artifact (the work of `train`)."""
    started = time.perf_counter()
    cfg = settings.train
    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite)

    import torch
    from transformers import set_seed

    from stream.inference import resolve_device, resolve_dtype
    from trainer.base_model import load_base_model, resolve_base_model
    from trainer.loop import fit
    from trainer.optim import default_learning_rate

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(device, cfg.precision)
    source = resolve_base_model(cfg.base_model)
    set_seed(cfg.seed)
    model, tokenizer = load_base_model(source)
    if cfg.learning_rate is None:
        cfg = cfg.model_copy(
            update={"learning_rate": default_learning_rate(int(model.config.hidden_size))}
        )
        settings = settings.model_copy(update={"train": cfg})
    pad_id = int(tokenizer.pad_token_id or 0)
    train_ids = _tokenize(tokenizer, [t for t, _ in data.train], cfg.max_length)
    val_ids = _tokenize(tokenizer, [t for t, _ in data.val], cfg.max_length)

    with staging_dir(out, cfg.overwrite) as tmp:
        with (tmp / LOG_FILE).open("w", encoding="utf-8") as log_file:
            _log_line(
                log_file,
                {
                    "type": "start",
                    "base_model": cfg.base_model,
                    "device": str(device),
                    "autocast": str(dtype).replace("torch.", "") if dtype else "fp32",
                    "train": len(data.train),
                    "val": len(data.val),
                    "test": len(data.test),
                    "sources": data.names,
                    "options": cfg.model_dump(mode="json"),
                },
            )
            result = fit(
                model,
                cfg,
                train_ids=train_ids,
                train_labels=[y for _, y in data.train],
                val_ids=val_ids,
                val_labels=[y for _, y in data.val],
                train_groups=data.train_groups,
                val_groups=data.val_groups,
                pad_id=pad_id,
                device=device,
                autocast_dtype=dtype,
                log=lambda record: _log_line(log_file, record),
                progress=progress,
            )
            _log_line(
                log_file,
                {
                    "type": "end",
                    "steps": result.steps,
                    "epochs": result.epochs_completed,
                    "stopped_early": result.stopped_early,
                    "best_step": result.best.get("step"),
                    "best_val_macro_f1": result.best.get("val_macro_f1"),
                    "train_seconds": result.train_seconds,
                    "samples_per_s": result.samples_per_s,
                },
            )
        model.load_state_dict(result.best_state)
        module: torch.nn.Module = model
        module.to("cpu")
        model.save_pretrained(str(tmp), max_shard_size="20GB")
        tokenizer.save_pretrained(str(tmp))
        _assert_safetensors_only(tmp)
        del model
        meta = ArtifactMeta(
            model_version=new_model_version(cfg.base_model),
            text=settings.text,
            max_length=cfg.max_length,
            base_model=cfg.base_model,
            train_options={
                "train": cfg.model_dump(mode="json"),
                "data": settings.data.model_dump(mode="json"),
                "sources": [s.spec for s in data.sources],
                "base_model_location": source.description,
            },
            data=DataFingerprint(
                csv_name=data.csv_name, csv_sha256=data.csv_sha256, rows=data.fingerprint_rows()
            ),
            split_seed=settings.data.split_seed,
            library_versions=library_versions(),
        )
        write_meta(tmp, meta)

        from trainer.evaluate import evaluate_trained

        training = {
            "device": str(device),
            "precision": str(dtype).replace("torch.", "") if dtype else "fp32",
            "steps": result.steps,
            "epochs_completed": result.epochs_completed,
            "stopped_early": result.stopped_early,
            "best_step": result.best.get("step"),
            "best_val_macro_f1": result.best.get("val_macro_f1"),
            "best_val_loss": result.best.get("val_loss"),
            "best_val_mean_source_macro_f1": result.best.get("val_mean_source_macro_f1"),
            "train_seconds": result.train_seconds,
            "train_samples_per_s": result.samples_per_s,
            "learning_rate": cfg.learning_rate,
            "batch_size": cfg.batch_size,
            "max_length": cfg.max_length,
            "class_weighted_loss": cfg.class_weighted_loss,
            "source_balance": cfg.source_balance,
            "label_smoothing": cfg.label_smoothing,
            "layer_lr_decay": cfg.layer_lr_decay,
            "head_lr_scale": cfg.head_lr_scale,
            "ema_decay": cfg.ema_decay,
            "selected_on": "mean per-source validation macro-F1"
            if len(data.sources) > 1
            else "validation macro-F1",
        }
        meta, metrics = evaluate_trained(
            tmp,
            meta,
            data,
            settings,
            training=training,
            cross_domain_models=cross_domain_models() if cross_domain_models else None,
            asset_distribution=asset_distribution,
        )
        from trainer.export import export_artifact, gate_inputs

        meta = export_artifact(tmp, meta, gate_inputs(data), threads=cfg.num_threads or 1)
        write_meta(tmp, meta)
    return TrainOutcome(
        artifact=out,
        meta=meta,
        metrics=metrics,
        seconds=round(time.perf_counter() - started, 3),
    )


def _log_line(handle: IO[str], record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, default=_json_default) + "\n")
    handle.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _assert_safetensors_only(directory: Path) -> None:
    pickled = [p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickled or not (directory / WEIGHTS_FILE).is_file():
        raise RuntimeError(
            f"save_pretrained wrote {sorted(p.name for p in directory.iterdir())}; "
            f"expected a single {WEIGHTS_FILE} and no pickles"
        )


__all__ = [
    "LOG_FILE",
    "META_FILE",
    "REPORT_DIR",
    "TrainOutcome",
    "check_output_dir",
    "staging_dir",
    "train",
    "train_on",
]
