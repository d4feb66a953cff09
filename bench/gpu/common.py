"""Constants, shapes and sizes, token inputs: what every measurement shares."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    pass


REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
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
STEP_NAMES = ("correctness", "training", "inference", "memory", "serve", "serve_procs")
# Execution order: serve last, it needs the inference ceiling and is the most fragile (a broker).
RUN_ORDER = ("correctness", "training", "inference", "memory", "serve", "serve_procs")

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
    from stream.core import MICRO_BATCH_FACTOR

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
    # In id order: get_vocab() iterates a hash map, whose order changes from process to process,
    # and the serve step's texts (hence its skip counts) must not.
    ordered = sorted(vocab.items(), key=lambda item: item[1])
    return [w for w, i in ordered if lo <= i < limit and w.isalpha() and len(w) > 1]
