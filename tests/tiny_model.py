"""Tiny random BERTs for tests: real architecture and tokenizer classes, no downloads."""

from __future__ import annotations

import string
from pathlib import Path

from ops.settings import TextSettings
from stream.artifact import ArtifactMeta, new_model_version, write_meta

_WORDS = (
    "the a to and of is in it on for this that be are with buy sell moon pump dump bull bear "
    "bullish bearish btc eth bitcoin ethereum crypto price up down long short rocket chart "
    "good bad great terrible love hate profit loss gain crash rally dip hodl rekt going will "
    "not no yes now today market coin token lets time run break support resistance"
).split()


def write_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits)
    pieces = [f"##{c}" for c in chars]
    vocab = specials + chars + pieces + [w for w in _WORDS if w not in chars]
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return path


def make_tiny_base(directory: Path, *, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    """A randomly initialised BertForSequenceClassification plus tokenizer, `save_pretrained`ed."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    write_vocab(directory / "vocab.txt")
    # transformers 5 ignores `vocab_file=` in the constructor (every word becomes [UNK]);
    # loading the directory reads vocab.txt properly.
    tokenizer = BertTokenizerFast.from_pretrained(str(directory), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def make_tiny_artifact(
    directory: Path,
    *,
    text: TextSettings | None = None,
    temperature: float = 1.0,
    max_length: int = 64,
    seed: int = 0,
) -> Path:
    """A complete servable artifact (weights + tokenizer + cryptosent.json)."""
    make_tiny_base(directory, seed=seed)
    meta = ArtifactMeta(
        model_version=new_model_version("tiny-bert"),
        text=text or TextSettings(lang_backend="none"),
        max_length=max_length,
        base_model="tiny-random-bert",
        temperature=temperature,
    )
    write_meta(directory, meta)
    return directory
