"""`cryptosent demo` (`make demo`): the main job end to end on the embedded defaults."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptosent.common import add_global_args, add_kafka_args, settings_from_args, stop_on_signals
from ops.logging import configure_logging


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
    p.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="where the JSON log lines go (default runs/demo-<UTC time>.log); the terminal keeps "
        "the progress and the summary",
    )
    p.set_defaults(handler=run)


class _JsonLines(logging.Formatter):
    """Libraries' stdlib log records (ONNX Runtime's quantizer, transformers) in the same JSON
    shape as structlog's lines, so the log file reads as one format."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "event": record.getMessage(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            }
        )


@contextlib.contextmanager
def logs_to_file(path: Path, level: str) -> Iterator[None]:
    """Everything written to stderr goes to `path` meanwhile: structlog's and stdlib logging's
    records as JSON lines, and native libraries' own lines (librdkafka's `%N|...`) as they are,
    since file descriptor 2 is redirected too. stdout stays on the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    saved_stderr = sys.stderr
    with path.open("a", encoding="utf-8", buffering=1) as fh:
        os.dup2(fh.fileno(), 2)
        sys.stderr = fh
        configure_logging(level, "json")
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_JsonLines())
        try:
            yield
        finally:
            sys.stderr.flush()
            sys.stderr = saved_stderr
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


def default_log_path(now: datetime) -> Path:
    return Path("runs") / f"demo-{now:%Y%m%dT%H%M%SZ}.log"


def run(args: argparse.Namespace) -> int:
    from cryptosent.demo import run_demo

    settings = settings_from_args(args)
    stop = stop_on_signals("raise")
    log_path = args.log_file or default_log_path(datetime.now(UTC))
    print(f"[demo] logs (JSON lines): {log_path}", flush=True)
    try:
        with logs_to_file(log_path, settings.log_level):
            summary = run_demo(
                settings,
                model_dir=args.model,
                embedded=not args.external_kafka,
                keep_running=args.keep_running,
                stop=stop,
            )
    finally:
        configure_logging(settings.log_level, settings.log_format)
    print(f"[demo] logs (JSON lines): {log_path}", flush=True)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0
