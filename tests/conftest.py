"""Shared test helpers, and the `--broker` option of the integration suite."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The read-only data sets live next to the checkout (../shared/data); some machines copy them
# into it (shared/data).
SHARED_DATA_DIRS = (ROOT / "shared" / "data", ROOT.parent / "shared" / "data")


# The engine the integration suite runs on: `--broker`, else TEST_BROKER, else the embedded one.
BROKER_ENV = "TEST_BROKER"
BROKER_CHOICES = ("embedded", "kafka", "apache-kafka")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=BROKER_CHOICES,
        default=None,
        help=f"broker engine of the integration suite (default: ${BROKER_ENV} or embedded); "
        "kafka = Apache Kafka from Maven Central, needs java 17+ and mvn",
    )


def broker_engine_of(config: pytest.Config) -> str:
    """`embedded` or `apache-kafka`, the names `ops.broker.start_broker` takes."""
    chosen = config.getoption("--broker") or os.environ.get(BROKER_ENV) or "embedded"
    if chosen not in BROKER_CHOICES:
        raise pytest.UsageError(f"{BROKER_ENV}={chosen!r}: expected one of {BROKER_CHOICES}")
    return "apache-kafka" if chosen == "kafka" else chosen


def shared_data_path(name: str) -> Path:
    """A shared data file; missing, the test fails under CI and is skipped elsewhere."""
    for directory in SHARED_DATA_DIRS:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    where = " or ".join(str(d) for d in SHARED_DATA_DIRS)
    message = f"shared data file {name} not found in {where}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Callable[[str], Path]:
    """`shared_data("stocktwits_eth_2022_labeled.csv")` -> its path (see `shared_data_path`)."""
    return shared_data_path
