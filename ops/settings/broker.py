"""The `broker` section: `cryptosent broker`, embedded Tansu or a local Apache Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ops.settings.base import _Section

BrokerEngine = Literal["embedded", "apache-kafka"]


class ApacheKafkaSettings(_Section):
    """`cryptosent broker --engine apache-kafka`: one local KRaft node from Maven Central's jars."""

    # The version the tests run; docker-compose.yml's apache/kafka image carries the same tag.
    version: str = "4.4.0"
    # Jars are fetched here once with Maven; None = ~/.cache/cryptosent/kafka-<version>.
    cache_dir: Path | None = None
    # Small enough for a 2-core CI box that also runs the tests and the model.
    heap_mb: int = Field(default=512, ge=128, le=65_536)
    # A cold JVM on a busy machine needs far longer than Tansu to answer metadata.
    startup_timeout_s: float = Field(default=120.0, gt=0)


class BrokerSettings(_Section):
    engine: BrokerEngine = "embedded"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0 picks a free port
    binary: Path | None = None
    startup_timeout_s: float = Field(default=15.0, gt=0)
    # Apache Kafka only (the embedded broker keeps everything in memory): keep the log here, so
    # a restart on the same directory finds it; None = a temporary directory removed on exit.
    data_dir: Path | None = None
    apache_kafka: ApacheKafkaSettings = Field(default_factory=ApacheKafkaSettings)
