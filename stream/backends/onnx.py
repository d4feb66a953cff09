"""The ONNX Runtime backend: the artifact's `model.onnx` / `model.int8.onnx` behind `Backend`.

Same tokenizer (the artifact's), same truncation and the same per-batch dynamic padding as the
torch backend, so the planners and the serving loop cannot tell them apart. A file is loaded only
when its sha256 matches the one `cryptosent.json` recorded at export, and only when that export
passed the quality gate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ops.errors import UserError
from schemas.messages import Label
from stream.artifact import ArtifactMeta, read_meta
from stream.core.planning import Encoded, iter_planned

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from stream.core.text import TextPipeline

Variant = Literal["fp32", "int8"]
VARIANTS: tuple[Variant, ...] = ("fp32", "int8")
FILES: dict[Variant, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"

# A call's fixed cost in tokens' worth of compute, measured by bench/backends.py (MiniLM-L6, one
# intra-op thread, 2-core CPU): fp32 2.6 ms fixed / 0.33 ms per token, int8 2.1 / 0.21, against
# torch eager's 15.9 / 0.47 in the same run. ORT's small fixed cost lets the planner cut a
# micro-batch into more, tighter groups.
CALL_OVERHEAD_TOKENS: dict[Variant, float] = {"fp32": 8.0, "int8": 10.0}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> Encoded:
    """Exactly `SentimentModel.encode`: truncation at max_length, no padding, no type ids."""
    if not texts:
        return Encoded([])
    out = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return Encoded([list(ids) for ids in out["input_ids"]])


def pad_batch(batch_ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """int64 input_ids and attention_mask padded to this batch's longest row only."""
    width = max(len(ids) for ids in batch_ids)
    input_ids = np.full((len(batch_ids), width), pad_id, dtype=np.int64)
    attention = np.zeros((len(batch_ids), width), dtype=np.int64)
    for row, ids in enumerate(batch_ids):
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


@dataclass
class OnnxBackend:
    """A loaded artifact served by an ONNX Runtime CPU session."""

    meta: ArtifactMeta
    pipeline: TextPipeline
    tokenizer: PreTrainedTokenizerBase
    session: Any  # onnxruntime.InferenceSession (untyped library)
    variant: Variant
    max_length: int
    pad_id: int = 0

    @property
    def name(self) -> str:
        return f"onnx-{self.variant}"

    @property
    def model_version(self) -> str:
        return self.meta.model_version

    @property
    def labels(self) -> list[Label]:
        return list(self.meta.labels)

    @property
    def temperature(self) -> float:
        return self.meta.temperature

    @property
    def call_overhead_tokens(self) -> float:
        return CALL_OVERHEAD_TOKENS[self.variant]

    def init_thread(self, threads: int | None) -> None:
        """ORT fixes its intra-op threads when the session is created (`load_onnx_backend`)."""

    def encode(self, texts: Sequence[str]) -> Encoded:
        return encode_texts(self.tokenizer, texts, self.max_length)

    def iter_planned(
        self, encoded: Encoded, batch_size: int, *, by_cost: bool = False
    ) -> Iterator[tuple[list[int], list[list[int]]]]:
        """As `SentimentModel.iter_planned`, so today's serving loop takes either backend."""
        return iter_planned(encoded, batch_size, self.call_overhead_tokens, by_cost=by_cost)

    def forward_logits(self, batch_ids: Sequence[Sequence[int]]) -> np.ndarray:
        feeds = pad_batch(batch_ids, self.pad_id)
        (logits,) = self.session.run([OUTPUT_NAME], feeds)
        out: np.ndarray = np.asarray(logits, dtype=np.float32)
        return out


def new_session(path: Path, threads: int | None) -> Any:
    """A CPU session with `threads` intra-op threads (None: ORT's default, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verified_file(directory: Path, meta: ArtifactMeta, variant: Variant) -> Path:
    """The variant's file, or a one-line UserError: not exported, not gated, missing, altered."""
    entry = meta.onnx.get(variant)
    if entry is None:
        raise UserError(
            f"artifact {directory} has no ONNX {variant} model",
            hint=f"run `cryptosent export --model {directory} --csv CSV`"
            + (" (int8 ships only when it passes the quality gate)" if variant == "int8" else ""),
        )
    if not entry.gate_passed:
        raise UserError(f"refusing {directory / entry.file}: it failed the quality gate")
    path = directory / entry.file
    if not path.is_file():
        raise UserError(f"artifact {directory} lists {entry.file} but the file is missing")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise UserError(
            f"refusing {path}: sha256 {actual[:12]}... does not match "
            f"{entry.sha256[:12]}... recorded in cryptosent.json"
        )
    return path


# Tokenizers whose tokenizer.json alone is the whole tokenizer (normalizer, truncation and the
# [CLS]/[SEP] template): `tokenizers` runs them exactly as transformers' fast wrapper does.
_PLAIN_TOKENIZERS = frozenset({"BertTokenizer", "BertTokenizerFast"})


class JsonTokenizer:
    """The artifact's tokenizer.json run by `tokenizers` itself. Importing transformers imports
    torch (seconds of serve's cold start), which an ONNX worker never needs."""

    def __init__(self, path: Path, pad_token: str) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._max_length: int | None = None
        self.pad_token_id = self._tok.token_to_id(pad_token)

    def __call__(
        self,
        texts: list[str],
        *,
        truncation: bool,
        max_length: int,
        padding: bool,
        return_attention_mask: bool,
        return_token_type_ids: bool,
    ) -> dict[str, list[list[int]]]:
        if max_length != self._max_length:
            self._tok.enable_truncation(max_length)
            self._max_length = max_length
        return {"input_ids": [e.ids for e in self._tok.encode_batch(texts)]}


def load_tokenizer(directory: Path) -> Any:
    """`JsonTokenizer` for plain BERT-family artifacts, transformers' AutoTokenizer otherwise."""
    config_path, json_path = directory / "tokenizer_config.json", directory / "tokenizer.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if json_path.is_file() and config.get("tokenizer_class") in _PLAIN_TOKENIZERS:
        return JsonTokenizer(json_path, str(config.get("pad_token") or "[PAD]"))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(directory), local_files_only=True, trust_remote_code=False
    )


def load_onnx_backend(
    directory: Path,
    variant: Variant = "fp32",
    *,
    threads: int | None = None,
    max_length: int | None = None,
) -> OnnxBackend:
    """Load a verified ONNX file of an artifact; the text pipeline comes from the artifact."""
    if variant not in VARIANTS:
        raise UserError(f"unknown ONNX variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    meta = read_meta(directory)
    path = verified_file(directory, meta, variant)
    from stream.core.text import TextPipeline

    try:
        tokenizer = load_tokenizer(directory)
        session = new_session(path, threads)
    except Exception as exc:  # ORT raises its own untyped exception classes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load {path}: {first}") from None
    return OnnxBackend(
        meta=meta,
        pipeline=TextPipeline(meta.text),
        tokenizer=tokenizer,
        session=session,
        variant=variant,
        max_length=min(max_length or meta.max_length, meta.max_length),
        pad_id=int(tokenizer.pad_token_id or 0),
    )


__all__ = [
    "CALL_OVERHEAD_TOKENS",
    "FILES",
    "VARIANTS",
    "OnnxBackend",
    "Variant",
    "encode_texts",
    "load_onnx_backend",
    "pad_batch",
    "sha256_file",
    "verified_file",
]
