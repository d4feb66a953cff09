"""`cryptosent demo` (`make demo`): the main job end to end on the embedded defaults."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cryptosent.common import add_global_args, add_kafka_args, settings_from_args, stop_on_signals


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="broker → topics → quick model → serve → replay → live output → summary",
        description="Start the embedded broker, create the topics, train a quick model if none "
        "exists (from $CRYPTOSENT_DEMO_DATA or the packaged demo sample), serve it, replay a "
        "stream, show the labeled output as it arrives, print a summary and the dashboard URL, "
        "then shut everything down.",
    )
    add_global_args(p)
    add_kafka_args(p)
    p.add_argument("--model", type=Path, default=Path("models/demo"), help="demo artifact dir")
    p.add_argument(
        "--external-kafka",
        action="store_true",
        help="use --bootstrap-servers instead of starting the embedded broker",
    )
    p.add_argument("--limit", dest="demo.limit", type=int, default=None, help="tweets to replay")
    p.add_argument("--rate", dest="demo.rate", type=float, default=None, help="tweets per second")
    p.add_argument("--replay-csv", dest="demo.replay_csv", type=Path, default=None)
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="after the summary, keep serving and the dashboard up until Ctrl-C",
    )
    p.add_argument("--summary-json", type=Path, default=None, help="also write the summary here")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cryptosent.demo import run_demo

    settings = settings_from_args(args)
    stop = stop_on_signals("raise")
    summary = run_demo(
        settings,
        model_dir=args.model,
        embedded=not args.external_kafka,
        keep_running=args.keep_running,
        stop=stop,
    )
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0
