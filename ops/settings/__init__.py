"""The one settings tree.

Built once at the entry point (`cryptosent.cli`) and passed down; nothing else in the code base
reads the environment. Precedence, highest first: CLI flags (passed as init kwargs), environment
variables (`CRYPTOSENT_` prefix, `__` between levels), the optional `.env` file, then defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ops.settings.apps import (
    MAX_ASSET_INDEXES,
    AlertsSettings,
    AssetAlertsSettings,
    AssetRuleOverrides,
    DashboardSettings,
    DemoSettings,
)
from ops.settings.base import (
    _SECRET_HINTS,
    BackendChoice,
    Device,
    OutputKey,
    Precision,
    ProcessingGuarantee,
    _Section,
    _split_csv,
)
from ops.settings.broker import ApacheKafkaSettings, BrokerEngine, BrokerSettings
from schemas.text import TextConfig


class KafkaSettings(_Section):
    """Connection to Apache Kafka or the embedded Tansu broker."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "cryptosent"
    # Anything librdkafka understands, passed through verbatim (e.g. {"linger.ms": 5}).
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    def client_config(self) -> dict[str, Any]:
        """librdkafka configuration with secrets revealed: hand it to a client, never log it."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location is not None:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location is not None:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location is not None:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        conf.update(self.extra)
        return conf


def redact_client_config(conf: dict[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka config that is safe to log."""
    return {
        k: ("**********" if any(h in k.lower() for h in _SECRET_HINTS) else v)
        for k, v in conf.items()
    }


class TopicsSettings(_Section):
    input: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["cryptosent.tweets"])
    output: str = "cryptosent.sentiment"
    dead_letter: str = "cryptosent.deadletter"
    alerts: str = "cryptosent.alerts"
    # Used only by `--create-topics` and the demo; real clusters manage topics themselves.
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    _split = field_validator("input", mode="before")(_split_csv)

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one input topic is required")
        return value


class ModelSettings(_Section):
    artifact_dir: Path = Path("models/quick")
    device: Device = "auto"
    precision: Precision = "auto"
    batch_size: int = Field(default=64, ge=1, le=4096)
    max_length: int = Field(default=128, ge=8, le=512)
    backend: BackendChoice = "auto"


class InputFormat(_Section):
    """Where the fields of an incoming JSON object live (dotted paths, e.g. `data.text`)."""

    id_field: str = "id"
    text_field: str = "text"
    created_at_field: str = "created_at"
    label_field: str = "label"


class StreamSettings(_Section):
    group_id: str = "cryptosent-stream"
    group_instance_id: str | None = None
    batch_linger_ms: int = Field(default=50, ge=0, le=60_000)
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    transactional_id_prefix: str = "cryptosent-stream"
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    max_message_bytes: int = Field(default=64 * 1024, ge=256)
    include_text: bool = True
    output_key: OutputKey = "tweet_id"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    input_format: InputFormat = Field(default_factory=InputFormat)
    # Messages per micro-batch taken from Kafka; None = 8 x model.batch_size. Length bucketing
    # (plan_batches into forward batches of model.batch_size) happens inside a micro-batch, so a
    # micro-batch several forward batches wide pads far less than one forward batch's worth.
    batch_max_messages: int | None = Field(default=None, ge=1, le=65_536)
    # At-least-once: how often delivered offsets are committed (also on revoke and shutdown).
    commit_interval_ms: int = Field(default=1000, ge=10, le=60_000)
    transaction_timeout_ms: int = Field(default=60_000, ge=1_000)
    # Intra-op CPU threads for inference (torch.set_num_threads in the inference thread); None =
    # torch's default (every visible core), too many under a container CPU limit or a shared host.
    torch_threads: int | None = Field(default=None, ge=1, le=256)
    # Processes that clean text beside the prep thread (stream/serve/prep_pool.py); 0 = clean in
    # the prep thread itself. "auto": none on a CPU, where the model needs the cores; on a GPU up
    # to 8, since one Python thread of cleaning is serve's bottleneck there (docs/performance.md).
    prep_processes: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = "auto"


class AssetsSettings(_Section):
    """Which coins a post names (docs/assets.md): serve, `data summary`, the training report."""

    # A TOML asset map in the format of stream/core/assets_map.toml; None = the built-in map.
    map_path: Path | None = None


# The text pipeline's settings are a contract saved inside every artifact (schemas.text); the
# old name stays for the code that configures training with it.
TextSettings = TextConfig


class DataSettings(_Section):
    """How a CSV maps onto the Kaggle shape (`text`, `sentiment_label`)."""

    text_column: str = "text"
    label_column: str = "sentiment_label"
    id_column: str | None = None
    created_at_column: str | None = None
    # Raw label value -> Positive/Negative/Neutral, e.g. {"Bullish": "Positive"}.
    label_map: dict[str, str] = Field(default_factory=dict)
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    split_seed: int = 42


class TrainSettings(_Section):
    base_model: str = "minilm"
    # "seed": the original notebook's recipe (bert-base-uncased, lr 1e-4, batch 25, 3 epochs).
    profile: Literal["full", "quick", "seed"] = "full"
    epochs: float = Field(default=3.0, gt=0)
    batch_size: int = Field(default=25, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    # None: chosen by model size (trainer.optim.default_learning_rate); see docs/training.md.
    learning_rate: float | None = Field(default=None, gt=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_length: int = Field(default=128, ge=8, le=512)
    early_stopping_patience: int = Field(default=2, ge=0)
    evals_per_epoch: int = Field(default=1, ge=1)
    class_weighted_loss: bool = True
    # Several sources: "weight" scales each row's loss so every source counts as much in total
    # (no effect with one source). Chosen on validation: docs/training.md, "Several sources".
    source_balance: Literal["none", "weight"] = "weight"
    # The defaults of these three were chosen on validation (docs/training.md, "Levers").
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=0.5)
    # Learning rate of encoder layer i (of L) = lr * layer_lr_decay ** (L - i); the embeddings
    # get lr * layer_lr_decay ** L. 1.0: one rate for the whole body (trainer/optim.py).
    layer_lr_decay: float = Field(default=0.8, gt=0.0, le=1.0)
    # The new classifier and the pooler it reads learn at lr * head_lr_scale.
    head_lr_scale: float = Field(default=10.0, ge=1.0, le=100.0)
    # > 0: evaluate and save an exponential moving average of the weights (trainer/averaging.py).
    ema_decay: float = Field(default=0.0, ge=0.0, lt=1.0)
    group_by_length: bool = True
    max_samples: int | None = Field(default=None, ge=10)
    seed: int = 42
    device: Device = "auto"
    precision: Precision = "auto"
    num_threads: int | None = Field(default=None, ge=1)
    out: Path = Path("models/latest")
    overwrite: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CRYPTOSENT_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_assignment=True,
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    # CRYPTOSENT_DEMO_DATA: a Kaggle-shape CSV for the demo model; the packaged sample when unset.
    demo_data: Path | None = None
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicsSettings = Field(default_factory=TopicsSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    assets: AssetsSettings = Field(default_factory=AssetsSettings)
    text: TextConfig = Field(default_factory=TextConfig)
    data: DataSettings = Field(default_factory=DataSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.alerts.bullish_threshold_low >= self.alerts.bullish_threshold_high:
            raise ValueError("alerts.bullish_threshold_low must be below bullish_threshold_high")
        return self

    def redacted(self) -> dict[str, Any]:
        """A JSON-safe dump for logs: SecretStr fields stay masked, pass-through secrets too."""
        dumped = self.model_dump(mode="json")
        dumped["kafka"]["extra"] = redact_client_config(dumped["kafka"]["extra"])
        return dumped


def merge_overrides(base: dict[str, Any], dotted: dict[str, Any]) -> dict[str, Any]:
    """Fold dotted CLI overrides (`kafka.bootstrap_servers`) into a nested dict, skipping None."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in dotted.items():
        if value is None:
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def setting_env_names(model: type[BaseModel] = Settings, prefix: str = "CRYPTOSENT_") -> set[str]:
    """Every environment variable name that maps onto a setting (nested with `__`)."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        names.add(env)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_env_names(annotation, f"{env}__")
    return names


def unknown_env_names(environ: dict[str, str]) -> list[str]:
    """`CRYPTOSENT_*` variables that name no setting: a typo would otherwise be silently ignored."""
    known = setting_env_names()
    return sorted(
        k for k in environ if k.upper().startswith("CRYPTOSENT_") and k.upper() not in known
    )


def load_settings(
    overrides: dict[str, Any] | None = None, *, env_file: str | Path | None = ".env"
) -> Settings:
    """Build the settings tree. `overrides` are dotted CLI values (None means not given).

    Nested overrides are applied on top of what env/.env produced, section by section, so a flag
    for `kafka.bootstrap_servers` does not wipe `CRYPTOSENT_KAFKA__SASL_USERNAME`.
    """
    import os

    unknown = unknown_env_names(dict(os.environ))
    if unknown:
        raise ValueError(f"unknown setting(s) in the environment: {', '.join(unknown)}")
    from_env = Settings(_env_file=env_file)
    if not overrides or all(v is None for v in overrides.values()):
        return from_env
    merged = merge_overrides(from_env.model_dump(), overrides)
    return Settings.model_validate(merged)


__all__ = [
    "MAX_ASSET_INDEXES",
    "AlertsSettings",
    "ApacheKafkaSettings",
    "AssetAlertsSettings",
    "AssetRuleOverrides",
    "AssetsSettings",
    "BackendChoice",
    "BrokerEngine",
    "BrokerSettings",
    "DashboardSettings",
    "DataSettings",
    "DemoSettings",
    "Device",
    "InputFormat",
    "KafkaSettings",
    "ModelSettings",
    "OutputKey",
    "Precision",
    "ProcessingGuarantee",
    "Settings",
    "StreamSettings",
    "TextSettings",
    "TopicsSettings",
    "TrainSettings",
    "load_settings",
    "merge_overrides",
    "redact_client_config",
    "setting_env_names",
    "unknown_env_names",
]
