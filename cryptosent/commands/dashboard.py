"""`cryptosent dashboard`: serve the live page until a signal arrives."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cryptosent.common import add_global_args, add_kafka_args, settings_from_args, stop_on_signals


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "dashboard",
        help="serve a live web page of the output and alerts topics",
        description="Read the output and alerts topics from a look-back onwards and serve a page "
        "with the rolling bullish ratio, volume, recent tweets and alerts, updated by "
        "server-sent events. Prints the URL on stdout. Also /healthz and /api/snapshot.",
    )
    add_global_args(p)
    add_kafka_args(p)
    p.add_argument("--host", dest="dashboard.host", default=None)
    p.add_argument("--port", dest="dashboard.port", type=int, default=None, help="0 = a free port")
    p.add_argument(
        "--lookback",
        dest="dashboard.lookback_s",
        type=float,
        default=None,
        help="seconds of history to read at start",
    )
    p.add_argument(
        "--time-axis", dest="dashboard.time_axis", choices=["event", "processed"], default=None
    )
    p.add_argument("--bucket", dest="dashboard.bucket_s", type=int, default=None, help="seconds")
    p.add_argument("--output-topic", dest="topics.output", default=None)
    p.add_argument("--alerts-topic", dest="topics.alerts", default=None)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stream.apps.dashboard import Dashboard

    settings = settings_from_args(args)
    stop = stop_on_signals("raise")
    dashboard = Dashboard(settings.dashboard, settings.kafka, settings.topics, settings.alerts)
    url = dashboard.start()
    # The URL alone on stdout, so scripts can capture it.
    print(url, flush=True)
    try:
        while not stop.is_set() and dashboard.running:
            stop.wait(0.5)
    finally:
        dashboard.stop()
    if dashboard.feed.error:
        print(f"error: the Kafka feed stopped: {dashboard.feed.error}", file=sys.stderr)
        return 1
    return 0
