"""`cryptosent alerts`: the reference downstream subscriber (windows, rules, alerts topic)."""

from __future__ import annotations

import argparse
from typing import Any

from cryptosent.common import add_global_args, add_kafka_args, settings_from_args, stop_on_signals


def _windows(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a comma-separated list of seconds, e.g. 60,900"
        ) from None


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "alerts",
        help="watch the output topic and publish sentiment alerts",
        description="Keep a bullish-ratio index over tumbling event-time windows of the output "
        "topic and publish an Alert (threshold crossing, z-score, volume spike) to the alerts "
        "topic when a window closes. Every threshold is also a CRYPTOSENT_ALERTS__* setting.",
    )
    add_global_args(p)
    add_kafka_args(p)
    t = p.add_argument_group("topics")
    t.add_argument("--output-topic", dest="topics.output", default=None)
    t.add_argument("--alerts-topic", dest="topics.alerts", default=None)
    a = p.add_argument_group("windows and rules")
    a.add_argument("--group-id", dest="alerts.group_id", default=None)
    a.add_argument(
        "--windows", dest="alerts.windows_s", type=_windows, default=None, help="e.g. 60,900"
    )
    a.add_argument("--allowed-lateness", dest="alerts.allowed_lateness_s", type=float)
    a.add_argument("--high", dest="alerts.bullish_threshold_high", type=float, default=None)
    a.add_argument("--low", dest="alerts.bullish_threshold_low", type=float, default=None)
    a.add_argument("--zscore-k", dest="alerts.zscore_k", type=float, default=None)
    a.add_argument("--trailing-windows", dest="alerts.trailing_windows", type=int)
    a.add_argument("--volume-spike-factor", dest="alerts.volume_spike_factor", type=float)
    a.add_argument("--min-volume", dest="alerts.min_volume", type=int, default=None)
    a.add_argument(
        "--lookback",
        dest="alerts.lookback_s",
        type=float,
        default=None,
        help="seconds of the output topic re-read on start to rebuild the windows",
    )
    a.add_argument(
        "--metrics-port",
        dest="alerts.metrics_port",
        type=int,
        default=None,
        help="serve /metrics, /healthz and /readyz on this port (0 = a free one)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stream.apps.alerts import AlertsService

    settings = settings_from_args(args)
    stop = stop_on_signals("exit")
    AlertsService(settings.alerts, settings.kafka, settings.topics).run(stop)
    return 0
