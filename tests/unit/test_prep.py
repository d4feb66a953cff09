"""The optimised preparation (stream/core/text.py, lang.py) gives byte-identical results to the
pipeline before the optimisation: golden outputs recorded from that version, on every text in the
repository's fixtures and demo data (four text configurations) and, by digest, on the shared
StockTwits sets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ops.settings import TextSettings
from stream.core.text import CACHE_SIZE, TextPipeline
from tests.prep_golden import golden_rows, mismatches

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "default": TextSettings(),
    "langdetect": TextSettings(lang_backend="langdetect"),
    "keep": TextSettings(hashtags="keep", cashtags="keep", emojis="keep", lowercase=False),
    "demojize": TextSettings(
        emojis="demojize",
        hashtags="remove",
        cashtags="remove",
        remove_urls=False,
        remove_mentions=False,
    ),
}
# sha256 of json.dumps([[text, skip_reason, language], ...]) from the pre-optimisation pipeline
# with the default TextSettings over each file's `text` column, in file order.
SHARED_DIGESTS = {
    "stocktwits_eth_2022_labeled.csv": (
        "8b7bb2f1000077b683075dce4e5d1d230f0410f6e4352e6d8259419b4fbc67c6"
    ),
    "stocktwits_eth_2022_unlabeled.csv": (
        "538dadab9f1ac7c457c1e9c30e85d82e1187fb4588827ee3018b8dcddb501015"
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_repository_texts_match_the_reference_pipeline(config: str) -> None:
    rows = golden_rows()[config]
    assert len(rows) > 900
    results = TextPipeline(CONFIGS[config]).process_batch([str(r["raw"]) for r in rows])
    wrong = mismatches(config, rows, results)
    assert not wrong, wrong[:3]


@pytest.mark.parametrize("name", sorted(SHARED_DIGESTS))
def test_shared_data_matches_the_reference_pipeline(
    name: str, shared_data: Callable[[str], Path]
) -> None:
    texts = pd.read_csv(shared_data(name))["text"].astype(str).tolist()
    results = TextPipeline(TextSettings()).process_batch(texts)
    encoded = json.dumps(
        [[r.text, r.skip_reason and r.skip_reason.value, r.language] for r in results]
    ).encode()
    assert hashlib.sha256(encoded).hexdigest() == SHARED_DIGESTS[name]


def test_repeated_texts_come_from_the_bounded_cache() -> None:
    pipeline = TextPipeline(TextSettings(lang_backend="none"))
    texts = ["BTC to the moon!!", "eth dump $ETH.X", "BTC to the moon!!"] * 3
    first = pipeline.process_batch(texts)
    assert first == pipeline.process_batch(texts)
    assert first[0] == first[2] == pipeline.process("BTC to the moon!!")
    info = pipeline._cache
    assert info.misses == 2
    assert info.maxsize == CACHE_SIZE
