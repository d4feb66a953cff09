"""`cryptosent replay`: stream a CSV into a topic as TweetIn JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptosent.common import (
    add_data_mapping_args,
    add_global_args,
    add_kafka_args,
    settings_from_args,
)


def _rate(value: str) -> float:
    text = value.strip().lower().removesuffix("/s")
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"rate {value!r} is not a number (e.g. 200 or 200/s)"
        ) from None
    if rate < 0:
        raise argparse.ArgumentTypeError("rate must be >= 0 (0 = as fast as possible)")
    return rate


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="stream a CSV into a topic as TweetIn JSON (rate-limited, idempotent)",
        description="Send each CSV row as a TweetIn JSON message keyed by its id. Kaggle shape "
        "(text, sentiment_label), the unlabeled StockTwits shape (message_id, created_at, text) "
        "or mapped columns. Labels travel along (Positive/Negative) so downstream can score live "
        "accuracy.",
    )
    add_global_args(p)
    add_kafka_args(p)
    add_data_mapping_args(p)
    p.add_argument("--csv", type=Path, required=True)
    p.add_argument("--topic", required=True)
    p.add_argument(
        "--rate",
        type=_rate,
        default=None,
        metavar="N/s",
        help="messages per second; 0 or absent = as fast as possible",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="send at most N")
    p.add_argument(
        "--loop", action="store_true", help="repeat the file (ids of repeats get a -loopN suffix)"
    )
    p.add_argument(
        "--keep-event-time",
        action="store_true",
        help="created_at from the CSV instead of the send time",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only on a terminal)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from ops.errors import UserError
    from stream.apps.replay import replay

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if not args.csv.is_file():
        raise UserError(f"CSV file {args.csv} does not exist")
    summary = replay(
        settings.kafka,
        args.csv,
        args.topic,
        rate=args.rate,
        limit=args.limit,
        loop=args.loop,
        keep_event_time=args.keep_event_time,
        data=settings.data,
        progress=args.progress,
    )
    print(summary.line(), flush=True)
    return 0 if summary.failed == 0 else 1
