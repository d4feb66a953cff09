"""The batched py3langid scoring gives py3langid's own raw scores, bit for bit."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops.settings import TextSettings
from stream.core import langid_batch
from stream.core.lang import LanguageFilter
from stream.core.langid_batch import BatchScorer
from stream.core.text import TextPipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _identifier() -> object:
    backend = LanguageFilter(TextSettings())._get_backend()
    return backend._identifier  # type: ignore[attr-defined]


@pytest.mark.parametrize("chunk", [1024, 7])
def test_batch_scores_equal_py3langid_bit_for_bit(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(langid_batch, "_CHUNK", chunk)
    identifier = _identifier()
    assert BatchScorer.supports(identifier)
    pipeline = TextPipeline(TextSettings())
    raws = (FIXTURES / "non_english_crypto.txt").read_text(encoding="utf-8").splitlines()
    raws += pd.read_csv(FIXTURES / "train_small.csv")["text"].astype(str).tolist()
    views = [pipeline._clean(r, want_lang_view=True).lang_view for r in raws]
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz  ETHéüßñçø日本語кирилица'-"
    views += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(200)]
    views += ["", "a", "SHOUTING IN CAPITALS ONLY"]
    got = BatchScorer(identifier).scores(views)
    for view, scores in zip(views, got, strict=True):
        want = identifier._decide(view)  # type: ignore[attr-defined]
        assert scores.dtype == want.dtype
        assert np.array_equal(scores.view(np.uint32), want.view(np.uint32)), view
