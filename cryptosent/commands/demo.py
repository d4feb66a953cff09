"""`cryptosent demo` (`make demo`): the main job end to end on the embedded defaults."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from cryptosent.common import add_global_args, add_kafka_args, settings_from_args


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
    stop = threading.Event()
    hits = 0

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
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
