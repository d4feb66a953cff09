from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import DeadLetter, DeadLetterKind, Label, SentimentOut, SkipReason, SourceRef, Status
from schemas.export import EXPORTED, JSON_DIR, render

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SRC = SourceRef(topic="t", partition=0, offset=1)


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_committed_json_schema_matches_model(name: str) -> None:
    path = JSON_DIR / f"{name}.schema.json"
    assert path.is_file(), f"{path} missing: run `make schemas`"
    assert path.read_text(encoding="utf-8") == render(EXPORTED[name]), (
        f"{path.name} is stale: run `make schemas` and commit the result"
    )


def test_classified_record_round_trips() -> None:
    rec = SentimentOut(
        id="1",
        status=Status.CLASSIFIED,
        label=Label.POSITIVE,
        p_negative=0.2,
        p_positive=0.8,
        model_version="m",
        source=SRC,
        processed_time=NOW,
    )
    assert SentimentOut.model_validate_json(rec.model_dump_json()) == rec
    assert '"label":"POSITIVE"' in rec.model_dump_json()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": Status.CLASSIFIED},  # no label
        {
            "status": Status.CLASSIFIED,
            "label": Label.NEGATIVE,
            "p_negative": 0.9,
            "p_positive": 0.9,
        },
        {"status": Status.SKIPPED},  # no reason
        {"status": Status.SKIPPED, "skip_reason": SkipReason.NON_ENGLISH, "label": Label.POSITIVE},
    ],
)
def test_inconsistent_records_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SentimentOut(id="1", model_version="m", source=SRC, processed_time=NOW, **kwargs)  # type: ignore[arg-type]


def test_dead_letter_needs_exactly_one_payload() -> None:
    DeadLetter(
        error_kind=DeadLetterKind.INVALID_JSON,
        error_message="x",
        payload_text="{",
        source=SRC,
        dead_lettered_at=NOW,
    )
    with pytest.raises(ValidationError):
        DeadLetter(
            error_kind=DeadLetterKind.INVALID_UTF8,
            error_message="x",
            source=SRC,
            dead_lettered_at=NOW,
        )


# `text` of a cryptosent.json written before TextConfig moved to schemas/ (then TextSettings).
_OLD_ARTIFACT_TEXT = {
    "unescape_html": True,
    "unicode_normalization": "NFKC",
    "remove_mentions": True,
    "remove_urls": True,
    "hashtags": "strip_symbol",
    "cashtags": "ticker",
    "emojis": "demojize",
    "symbol_pattern": "[^\\w\\s]",
    "lowercase": False,
    "min_chars": 3,
    "lang_backend": "none",
    "lang_min_confidence": 0.95,
    "lang_min_chars": 20,
    "lang_min_script_letters": 2,
    "lang_seed": 0,
}


def test_text_config_reads_existing_artifacts_and_is_the_settings_section() -> None:
    from ops.settings import Settings, TextSettings
    from schemas.text import TextConfig

    config = TextConfig.model_validate(_OLD_ARTIFACT_TEXT)
    assert config.lang_backend == "none"
    assert config.symbol_pattern == r"[^\w\s]"
    assert config.model_dump(mode="json") == _OLD_ARTIFACT_TEXT
    assert TextSettings is TextConfig
    assert isinstance(Settings(_env_file=None).text, TextConfig)
    with pytest.raises(ValidationError):
        TextConfig.model_validate({**_OLD_ARTIFACT_TEXT, "unknown": 1})
