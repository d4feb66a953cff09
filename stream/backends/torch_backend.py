"""The torch backend: load an artifact's safetensors weights and run them, the path that turns
cleaned text into probabilities for `serve`, the trainer's evaluation and the benchmarks.
`SentimentModel` satisfies `stream.backends.base.Backend`.

Batches are planned by token length so that each forward pass pays only for its own longest
text (dynamic padding); that, not the batch size, dominates CPU cost on tweets whose token
lengths run p50 28 / p99 128.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ops.errors import UserError
from ops.settings import Device, Precision
from schemas.messages import Label
from stream.artifact import ArtifactMeta, read_meta
from stream.core.planning import Encoded, iter_planned, softmax

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from stream.core.text import TextPipeline


def resolve_device(device: Device) -> torch.device:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was requested but no CUDA device is available")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(device: torch.device, precision: Precision) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. Half precision only on CUDA: CPU bf16 autocast
    is slower than fp32 on most CPUs this runs on."""
    import torch

    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def forward_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """Autocast to `dtype` (None: fp32) and, on CUDA, attention without cuDNN's kernel.

    Since torch 2.5, SDPA prefers cuDNN attention on Hopper for bf16/fp16. cuDNN builds an
    execution graph per input shape (hundreds of ms), and dynamic padding gives almost every
    batch a new (rows, width) shape. On an H200 that made the forward 2.4x slower on the same
    batches, and dynamic-padded training 5.7x slower than fixed-128 (bench/results/gpu).
    The memory-efficient kernel takes the padding mask and has no per-shape build. Shared by
    serve and the trainer (trainer/loop.py) so both run the same kernels."""
    import torch

    stack = contextlib.ExitStack()
    if dtype is not None:
        stack.enter_context(torch.autocast(device_type=device.type, dtype=dtype))
    if device.type == "cuda":
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:  # torch < 2.3 has no cuDNN attention to avoid
            return stack
        backends = [
            SDPBackend.FLASH_ATTENTION,
            SDPBackend.EFFICIENT_ATTENTION,
            SDPBackend.MATH,
        ]
        stack.enter_context(sdpa_kernel(backends))
    return stack


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", None
    )
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class InferenceStats:
    forward_calls: int = 0
    oom_splits: int = 0
    device_seconds: float = 0.0
    padded_tokens: int = 0
    real_tokens: int = 0


@dataclass
class SentimentModel:
    """A loaded artifact: pipeline, tokenizer and model on a device."""

    meta: ArtifactMeta
    pipeline: TextPipeline
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    device: torch.device
    autocast_dtype: torch.dtype | None
    max_length: int
    stats: InferenceStats = field(default_factory=InferenceStats)
    # Seam for tests and the OOM benchmark: runs one padded batch, returns logits on the CPU.
    run_batch: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None

    @property
    def name(self) -> str:
        precision = (
            str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "fp32"
        )
        precision = {"bfloat16": "bf16", "float16": "fp16"}.get(precision, precision)
        return f"torch-{self.device.type}-{precision}"

    @property
    def model_version(self) -> str:
        return self.meta.model_version

    @property
    def temperature(self) -> float:
        return self.meta.temperature

    @property
    def labels(self) -> list[Label]:
        """Class labels in logit-column order."""
        return list(self.meta.labels)

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Tokenize with truncation at max_length and no padding (padding happens per batch)."""
        if not texts:
            return Encoded([])
        out = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return Encoded([list(ids) for ids in out["input_ids"]])

    def collate(self, batch_ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Pad to the longest sequence of this batch, never further."""
        import torch

        width = max(len(ids) for ids in batch_ids)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for row, ids in enumerate(batch_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        self.stats.padded_tokens += int(input_ids.numel())
        self.stats.real_tokens += int(attention.sum())
        return {"input_ids": input_ids, "attention_mask": attention}

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.run_batch is not None:
            return self.run_batch(batch)
        import torch

        moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.inference_mode(), forward_context(self.device, self.autocast_dtype):
            logits: torch.Tensor = self.model(**moved).logits
        return logits.float().cpu()

    def forward_logits(self, batch_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Logits for one planned batch. On CUDA out-of-memory the batch is halved and retried,
        so a burst of long tweets degrades throughput instead of losing messages."""
        start = time.perf_counter()
        try:
            logits = self._forward(self.collate(batch_ids))
        except Exception as exc:
            if not _is_oom(exc) or len(batch_ids) <= 1:
                raise
            self._empty_cache()
            self.stats.oom_splits += 1
            mid = len(batch_ids) // 2
            return np.concatenate(
                [self.forward_logits(batch_ids[:mid]), self.forward_logits(batch_ids[mid:])]
            )
        finally:
            self.stats.device_seconds += time.perf_counter() - start
        self.stats.forward_calls += 1
        out: np.ndarray = logits.numpy()
        return out

    def _empty_cache(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def init_thread(self, threads: int | None) -> None:
        """torch's intra-op thread count is per calling thread: set it where inference runs."""
        if threads is not None:
            import torch

            torch.set_num_threads(threads)

    @property
    def call_overhead_tokens(self) -> float:
        """A forward call's fixed cost in tokens' worth of compute (see plan_batches_by_cost)."""
        return 4096.0 if self.device.type == "cuda" else 48.0

    def iter_planned(
        self, encoded: Encoded, batch_size: int, *, by_cost: bool = False
    ) -> Iterator[tuple[list[int], list[list[int]]]]:
        """Planned groups with their token ids; `by_cost` uses `plan_batches_by_cost` (serve)."""
        return iter_planned(encoded, batch_size, self.call_overhead_tokens, by_cost=by_cost)

    def predict_logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Raw (uncalibrated) logits, shape (n, 2), in input order. Texts must already be cleaned
        by `self.pipeline`."""
        encoded = self.encode(texts)
        out = np.zeros((len(texts), len(self.meta.labels)), dtype=np.float32)
        for idx, ids in self.iter_planned(encoded, batch_size):
            out[idx] = self.forward_logits(ids)
        return out

    def predict_proba(
        self, texts: Sequence[str], batch_size: int = 64, *, calibrated: bool = True
    ) -> np.ndarray:
        logits = self.predict_logits(texts, batch_size)
        return softmax(logits, self.temperature if calibrated else 1.0)


def load_model(
    directory: Path,
    *,
    device: Device = "auto",
    precision: Precision = "auto",
    max_length: int | None = None,
    num_threads: int | None = None,
) -> SentimentModel:
    """Load an artifact directory for inference. Only safetensors, never remote code; the text
    pipeline comes from the artifact, not from the caller's settings."""
    meta = read_meta(directory)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from stream.core.text import TextPipeline

    # A per-load progress bar on stderr is noise in a service's logs.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    if num_threads:
        torch.set_num_threads(num_threads)
    dev = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            str(directory),
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load model artifact {directory}: {first}") from None
    model.eval()
    model.to(dev)
    limit = min(max_length or meta.max_length, meta.max_length)
    return SentimentModel(
        meta=meta,
        pipeline=TextPipeline(meta.text),
        tokenizer=tokenizer,
        model=model,
        device=dev,
        autocast_dtype=resolve_dtype(dev, precision),
        max_length=limit,
    )
