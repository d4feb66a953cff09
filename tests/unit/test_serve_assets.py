"""Serve fills `assets` and `asset_map_version` on every SentimentOut (issue 12, docs/assets.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.errors import UserError
from ops.settings import Settings, load_settings
from schemas.messages import DeadLetter, DeadLetterKind, SentimentOut, SkipReason, Status
from stream.core.assets import AssetExtractor, load_asset_map, parse_asset_map
from stream.core.steps import Batch, build_records, infer, prepare
from stream.serve.config import ServeConfig
from tests.unit.test_stream_processing import NOW, FakeModel, items, tweet

MAP = load_asset_map(None)


def run(batch: Batch, extractor: AssetExtractor | None) -> list[SentimentOut | DeadLetter]:
    model = FakeModel()
    prepare(batch, model.pipeline, model, 4, extractor=extractor)
    infer(batch, model)
    records = build_records(
        batch,
        labels=model.labels,
        model_version=model.model_version,
        include_text=True,
        output_topic="out",
        dead_letter_topic="dlq",
        asset_map_version=None if extractor is None else extractor.version,
        now=NOW,
    )
    return [
        SentimentOut.model_validate_json(r.value)
        if r.topic == "out"
        else DeadLetter.model_validate_json(r.value)
        for r in records
    ]


def test_assets_come_from_the_raw_text_primary_first_on_classified_and_skipped() -> None:
    batch = Batch(
        seq=1,
        items=items(
            # The fake pipeline lowercases: "$link" would then be a word, not the ticker.
            tweet(0, "Bitcoin slides as $ETH falls, $LINK too"),
            b"not json",
            tweet(2, "hola $SOL.X amigos"),
            tweet(3, "check out this link, $100 off"),
        ),
    )
    out = run(batch, AssetExtractor(MAP))
    classified, dead, spanish, none = out
    assert isinstance(classified, SentimentOut)
    assert isinstance(dead, DeadLetter)
    assert isinstance(spanish, SentimentOut)
    assert isinstance(none, SentimentOut)
    assert classified.status is Status.CLASSIFIED
    assert classified.assets == ["ETH", "BTC", "LINK"]
    assert spanish.skip_reason is SkipReason.NON_ENGLISH
    assert spanish.assets == ["SOL"]
    assert none.status is Status.CLASSIFIED
    assert none.assets == []
    for record in (classified, spanish, none):
        assert record.asset_map_version == MAP.version


def test_without_an_extractor_records_say_no_map_was_used() -> None:
    (only,) = run(Batch(seq=1, items=items(tweet(0, "$ETH up"))), None)
    assert isinstance(only, SentimentOut)
    assert only.assets == []
    assert only.asset_map_version is None


class BrokenExtractor(AssetExtractor):
    def extract(self, text: str) -> list[str]:
        if "boom" in text:
            raise RuntimeError("extractor bug")
        return super().extract(text)


def test_an_extractor_failure_is_one_internal_error_and_the_rest_goes_on() -> None:
    batch = Batch(seq=1, items=items(tweet(0, "$ETH fine"), tweet(1, "boom"), tweet(2, "$BTC ok")))
    first, bad, last = run(batch, BrokenExtractor(MAP))
    assert isinstance(bad, DeadLetter)
    assert bad.error_kind is DeadLetterKind.INTERNAL_ERROR
    assert "asset extraction failed" in bad.error_message
    assert isinstance(first, SentimentOut)
    assert isinstance(last, SentimentOut)
    assert (first.assets, last.assets) == (["ETH"], ["BTC"])


def test_the_map_comes_from_the_assets_settings_section(tmp_path: Path) -> None:
    own = tmp_path / "map.toml"
    own.write_text('version = "custom-7"\n[assets.ETH]\nwords = ["ether"]\n', encoding="utf-8")
    config = ServeConfig.of(Settings.model_validate({"assets": {"map_path": str(own)}}))
    extractor = config.asset_extractor()
    assert extractor.version == "custom-7"
    assert extractor.extract("ether and $BTC") == ["ETH"]
    assert ServeConfig.of(Settings()).asset_extractor().version == MAP.version


def test_the_map_path_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRYPTOSENT_ASSETS__MAP_PATH", str(tmp_path / "m.toml"))
    assert load_settings(env_file=None).assets.map_path == tmp_path / "m.toml"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read asset map"),
        ("version = ", "not valid TOML"),
        ('version = "1"\n[assets.eth]\nwords = ["x"]\n', "is not A-Z0-9"),
    ],
)
def test_a_bad_map_file_is_one_user_error_at_startup(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "map.toml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    config = ServeConfig.of(Settings.model_validate({"assets": {"map_path": str(path)}}))
    with pytest.raises(UserError) as caught:
        config.asset_extractor()
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_parse_asset_map_is_what_the_serve_extractor_uses() -> None:
    small = parse_asset_map({"version": "2", "assets": {"BTC": {"words": ["bitcoin"]}}})
    assert AssetExtractor(small).extract("Bitcoin and $ETH") == ["BTC"]


def test_serve_rejects_a_bad_map_in_one_line_before_touching_the_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptosent.cli import main
    from tests.tiny_model import make_tiny_artifact

    artifact = make_tiny_artifact(tmp_path / "tiny")
    capsys.readouterr()  # the artifact writer's progress bars
    bad = tmp_path / "map.toml"
    bad.write_text('version = "1"\n[assets.BTC]\nwords = ["x"]\n[assets.ETH]\nwords = ["x"]\n')
    # A closed port: reaching the broker check would be a different error.
    argv = ["serve", "--model", str(artifact), "--asset-map", str(bad)]
    code = main([*argv, "--bootstrap-servers", "127.0.0.1:1", "--env-file", "/nonexistent"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: asset map {bad}: 'x' (assets.ETH) is also an alias of BTC; "
        "see docs/assets.md for the asset map format"
    ]
