"""One embedded Tansu broker per test session; each test makes its own uuid-named topics."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from ops.broker import EmbeddedBroker
from ops.kafka import create_topics
from ops.settings import KafkaSettings


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap)


@pytest.fixture
def make_topic(kafka_settings: KafkaSettings) -> Callable[..., str]:
    def _make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topics(kafka_settings, [name], partitions=partitions)
        return name

    return _make
