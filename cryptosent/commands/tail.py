"""`cryptosent tail`: pretty-print a topic with running counts."""

from __future__ import annotations

import argparse
from typing import Any

from cryptosent.common import add_global_args, add_kafka_args, settings_from_args


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tail",
        help="pretty-print a sentiment, dead-letter or any other topic",
        description="Prints `id label p_pos status assets text` for sentiment records, kind and "
        "message for dead letters, raw text otherwise, with counts per label/status. Commits "
        "nothing.",
    )
    add_global_args(p)
    add_kafka_args(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--from-beginning", action="store_true", help="default: only new records")
    p.add_argument("--max", type=int, default=None, metavar="N", help="exit after N records")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="exit after S seconds without a record",
    )
    p.add_argument(
        "--asset",
        action="append",
        default=None,
        metavar="TICKER",
        help="only sentiment records naming this asset (repeatable: --asset ETH --asset BTC); "
        "each input once, whatever stream.output_key",
    )
    p.add_argument(
        "--output-key",
        dest="stream.output_key",
        choices=["tweet_id", "primary_asset", "asset_fanout"],
        default=None,
        help="how serve keys the topic (default: the stream.output_key setting); with "
        "asset_fanout, --asset shows each input once",
    )
    p.add_argument(
        "--read-committed",
        action="store_true",
        help="hide records of open (and, on Kafka, aborted) transactions",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from stream.apps.tail import tail

    summary = tail(
        settings.kafka,
        args.topic,
        from_beginning=args.from_beginning,
        max_records=args.max,
        timeout_s=args.timeout,
        read_committed=args.read_committed,
        assets=args.asset,
        output_key=settings.stream.output_key,
    )
    print(summary.line(), flush=True)
    return 0
