from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from ops.settings import Settings, load_settings, merge_overrides, redact_client_config


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("CRYPTOSENT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout


def test_defaults_are_valid() -> None:
    s = load_settings(env_file=None)
    assert s.topics.input == ["cryptosent.tweets"]
    assert s.stream.processing_guarantee == "at_least_once"
    assert s.train.batch_size == 25
    assert s.text.symbol_pattern == r"[^\w\s]"


def test_env_nested_and_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSENT_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("CRYPTOSENT_TOPICS__INPUT", "a,b")
    monkeypatch.setenv("CRYPTOSENT_STREAM__BATCH_LINGER_MS", "25")
    monkeypatch.setenv("CRYPTOSENT_STREAM__INPUT_FORMAT__TEXT_FIELD", "data.text")
    monkeypatch.setenv("CRYPTOSENT_KAFKA__EXTRA", '{"linger.ms": 7}')
    s = load_settings(env_file=None)
    assert s.kafka.bootstrap_servers == "kafka:9092"
    assert s.topics.input == ["a", "b"]
    assert s.stream.batch_linger_ms == 25
    assert s.stream.input_format.text_field == "data.text"
    assert s.kafka.client_config()["linger.ms"] == 7


def test_json_list_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSENT_TOPICS__INPUT", '["x", "y"]')
    assert load_settings(env_file=None).topics.input == ["x", "y"]


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / "custom.env"
    env.write_text("CRYPTOSENT_MODEL__BATCH_SIZE=16\n")
    assert load_settings(env_file=env).model.batch_size == 16


def test_cli_overrides_beat_env_and_keep_siblings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSENT_KAFKA__BOOTSTRAP_SERVERS", "from-env:9092")
    monkeypatch.setenv("CRYPTOSENT_KAFKA__SASL_USERNAME", "alice")
    s = load_settings({"kafka.bootstrap_servers": "from-flag:9092", "model.device": None})
    assert s.kafka.bootstrap_servers == "from-flag:9092"
    assert s.kafka.sasl_username == "alice"
    assert s.model.device == "auto"


def test_secrets_never_in_repr_or_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSENT_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("CRYPTOSENT_KAFKA__EXTRA", '{"ssl.keystore.password": "s3cret"}')
    s = load_settings(env_file=None)
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.redacted())
    assert "s3cret" not in str(s.redacted())
    # ...but the client does get it.
    assert s.kafka.client_config()["sasl.password"] == "hunter2"


def test_redact_client_config() -> None:
    red = redact_client_config({"sasl.password": "x", "bootstrap.servers": "h:1"})
    assert red == {"sasl.password": "**********", "bootstrap.servers": "h:1"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CRYPTOSENT_MODEL__DEVICE", "tpu"),
        ("CRYPTOSENT_STREAM__PROCESSING_GUARANTEE", "maybe_once"),
        ("CRYPTOSENT_TEXT__SYMBOL_PATTERN", "[unclosed"),
        ("CRYPTOSENT_MODEL__BATCH_SIZE", "0"),
    ],
)
def test_invalid_values_rejected(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_merge_overrides_nested() -> None:
    merged = merge_overrides({"a": {"b": 1, "c": 2}}, {"a.b": 5, "d.e": 3, "z": None})
    assert merged == {"a": {"b": 5, "c": 2}, "d": {"e": 3}}


def test_unknown_environment_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSENT_KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(ValueError, match="CRYPTOSENT_KAFKA__BOOTSTRAP_SERVER"):
        load_settings(env_file=None)


def test_demo_data_env_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSENT_DEMO_DATA", "/data/kaggle.csv")
    assert load_settings(env_file=None).demo_data == Path("/data/kaggle.csv")


def test_serve_reads_its_own_sections_and_no_test_hook_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream.serve import ServeConfig

    s = Settings(
        _env_file=None,
        topics={"input": ["a", "b"]},
        model={"batch_size": 4},
        stream={"batch_max_messages": None, "processing_guarantee": "exactly_once"},
    )
    config = ServeConfig.of(s)
    assert (config.kafka, config.topics, config.stream, config.model) == (
        s.kafka,
        s.topics,
        s.stream,
        s.model,
    )
    assert config.batch_max == 8 * 4
    assert config.exactly_once
    assert config.topic_names == ["a", "b", s.topics.output, s.topics.dead_letter]
    # The old test-only delay is gone: naming it is an unknown setting, not a silent no-op.
    monkeypatch.setenv("CRYPTOSENT_STREAM__DEBUG_INFERENCE_DELAY_S", "1")
    with pytest.raises(ValueError, match="unknown setting"):
        load_settings(env_file=None)
