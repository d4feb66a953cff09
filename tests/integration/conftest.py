"""One broker per test session, on the engine `--broker embedded|kafka` (or TEST_BROKER) names;
each test makes its own uuid-named topics.

A test that cannot hold on one engine carries `@pytest.mark.broker_limitation(engine, reason)`:
on that engine it is skipped with the reason, which names the proof (bench/broker_semantics.py);
docs/operations.md lists the same."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from ops.broker import Broker, start_broker
from ops.errors import UserError
from ops.kafka import create_topics
from ops.settings import KafkaSettings
from tests.conftest import broker_engine_of

# The proof behind each limitation; cite it in the mark's reason.
TANSU_READ_COMMITTED = (
    "the embedded broker (Tansu 0.6) returns records of aborted and fenced transactions to "
    "read_committed readers (bench/results/broker_semantics.md), so exactly-once is verified on "
    "Apache Kafka only"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "broker_limitation(engine, reason): skipped on that broker engine, with the reason",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    engine = broker_engine_of(config)
    for item in items:
        for mark in item.iter_markers("broker_limitation"):
            limited = mark.args[0] if mark.args else mark.kwargs.get("engine")
            if limited not in ("embedded", "apache-kafka"):
                raise pytest.UsageError(f"{item.nodeid}: broker_limitation engine {limited!r}")
            if limited == engine:
                reason = mark.args[1] if len(mark.args) > 1 else mark.kwargs.get("reason", "")
                item.add_marker(pytest.mark.skip(reason=f"broker limitation: {reason}"))


@pytest.fixture(scope="session")
def broker_engine(pytestconfig: pytest.Config) -> str:
    """`embedded` or `apache-kafka`."""
    return broker_engine_of(pytestconfig)


@pytest.fixture(scope="session")
def broker(broker_engine: str) -> Iterator[Broker]:
    try:
        with start_broker(broker_engine) as running:
            yield running
    except UserError as exc:
        pytest.fail(f"cannot start the {broker_engine} broker: {exc.one_line()}", pytrace=False)


@pytest.fixture
def kafka_settings(broker: Broker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap)


@pytest.fixture
def make_topic(kafka_settings: KafkaSettings) -> Callable[..., str]:
    def _make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topics(kafka_settings, [name], partitions=partitions)
        return name

    return _make
