"""The model artifact: one directory holding everything the stream needs.

Layout (written by the trainer, read here):
    config.json, model.safetensors, tokenizer files   Hugging Face `save_pretrained` output
    cryptosent.json                                   `ArtifactMeta` below
    report/                                           evaluation report (not needed to serve)

The format is defined here, in `stream/`, so the stream owns what it is willing to load and the
trainer writes to that contract.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ops.errors import UserError
from schemas.messages import Label
from schemas.text import TextConfig

META_FILE = "cryptosent.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
# Pickle-based weight formats execute code on load; an artifact carrying any of them is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class DataFingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csv_name: str
    csv_sha256: str
    rows: dict[str, int] = Field(default_factory=dict)


class OnnxFile(BaseModel):
    """An ONNX export shipped in the artifact, with the quality gate it passed against fp32 torch
    on the test split (written by `cryptosent export` / the end of `cryptosent train`)."""

    model_config = ConfigDict(extra="forbid")

    file: str
    sha256: str
    method: str
    macro_f1: float
    macro_f1_delta: float
    agreement: float
    gate_passed: bool


class ArtifactMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    model_version: str
    labels: list[Label] = Field(default_factory=lambda: [Label.NEGATIVE, Label.POSITIVE])
    text: TextConfig
    max_length: int = Field(ge=8, le=512)
    base_model: str
    # Temperature scaling fitted on the validation split; logits are divided by it at serving.
    temperature: float = Field(default=1.0, gt=0)
    train_options: dict[str, Any] = Field(default_factory=dict)
    data: DataFingerprint | None = None
    split_seed: int | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    metrics: dict[str, Any] = Field(default_factory=dict)
    # Keyed by variant ("fp32", "int8"); empty in artifacts written before ONNX export existed.
    onnx: dict[str, OnnxFile] = Field(default_factory=dict)

    def label_of(self, index: int) -> Label:
        return self.labels[index]

    @property
    def positive_index(self) -> int:
        return self.labels.index(Label.POSITIVE)


def new_model_version(base_model: str, when: datetime | None = None) -> str:
    """Sortable and unique: `<base>-<UTC timestamp>-<random>`."""
    import secrets

    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = Path(base_model).name.replace("_", "-").lower() or "model"
    return f"{base}-{stamp}-{secrets.token_hex(3)}"


def library_versions() -> dict[str, str]:
    import platform

    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def write_meta(directory: Path, meta: ArtifactMeta) -> Path:
    path = directory / META_FILE
    path.write_text(meta.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def check_model_config(directory: Path, what: str) -> None:
    """A Hugging Face directory's config.json must exist, parse, and ask for no custom code:
    checked for artifacts here and for base models by the trainer."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserError(f"{what} {directory} has no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} {directory} has an unreadable config.json: {exc}") from None
    if isinstance(config, dict) and "auto_map" in config:
        raise UserError(
            f"refusing {what} {directory}: its config asks for custom code (auto_map)",
            hint="trust_remote_code is never enabled",
        )


def read_meta(directory: Path) -> ArtifactMeta:
    """Validate an artifact directory and return its metadata, or raise a one-line UserError."""
    if not directory.exists():
        raise UserError(
            f"model artifact {directory} does not exist",
            hint="train one with `cryptosent train --csv PATH --out DIR` or pass --model DIR",
        )
    if not directory.is_dir():
        raise UserError(f"model artifact {directory} is not a directory")
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise UserError(
            f"{directory} is not a cryptosent artifact (no {META_FILE})",
            hint="point --model at a directory written by `cryptosent train`",
        )
    pickled = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise UserError(
            f"refusing artifact {directory}: it contains pickled weights ({', '.join(pickled)})",
            hint="only safetensors weights are loaded; re-save with save_pretrained(...)",
        )
    if not (directory / WEIGHTS_FILE).is_file():
        raise UserError(f"artifact {directory} has no {WEIGHTS_FILE}")
    check_model_config(directory, "artifact")
    try:
        meta = ArtifactMeta.model_validate_json(meta_path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"]
        raise UserError(
            f"artifact {directory} has an invalid {META_FILE}: {where}: {msg}"
        ) from None
    if meta.format_version != FORMAT_VERSION:
        raise UserError(
            f"artifact {directory} has format_version {meta.format_version}; "
            f"this cryptosent reads {FORMAT_VERSION}"
        )
    if sorted(meta.labels) != sorted([Label.NEGATIVE, Label.POSITIVE]):
        raise UserError(f"artifact {directory} must have labels NEGATIVE and POSITIVE")
    return meta
