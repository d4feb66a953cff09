"""Flags shared by every subcommand, and the one place they become a `Settings`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from pydantic import ValidationError

from ops.errors import UserError
from ops.logging import configure_logging
from ops.settings import Settings, load_settings


def add_global_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("general")
    g.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    g.add_argument("--log-format", choices=["auto", "json", "console"], default=None)
    g.add_argument(
        "--env-file", type=Path, default=Path(".env"), help="optional .env file (default .env)"
    )


def add_kafka_args(parser: argparse.ArgumentParser) -> None:
    """Every command that talks to Kafka takes the real-cluster settings, not only the embedded
    broker's address."""
    k = parser.add_argument_group("kafka")
    k.add_argument("--bootstrap-servers", dest="kafka.bootstrap_servers", default=None)
    k.add_argument(
        "--security-protocol",
        dest="kafka.security_protocol",
        choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
        default=None,
    )
    k.add_argument(
        "--sasl-mechanism",
        dest="kafka.sasl_mechanism",
        choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"],
        default=None,
    )
    k.add_argument("--sasl-username", dest="kafka.sasl_username", default=None)
    k.add_argument(
        "--sasl-password",
        dest="kafka.sasl_password",
        default=None,
        help="prefer CRYPTOSENT_KAFKA__SASL_PASSWORD: flags show up in `ps`",
    )
    k.add_argument("--ssl-ca-location", dest="kafka.ssl_ca_location", default=None)
    k.add_argument("--ssl-certificate-location", dest="kafka.ssl_certificate_location")
    k.add_argument("--ssl-key-location", dest="kafka.ssl_key_location", default=None)


def add_data_mapping_args(parser: argparse.ArgumentParser) -> None:
    m = parser.add_argument_group("CSV mapping (onto the Kaggle shape)")
    m.add_argument("--text-column", dest="data.text_column", default=None)
    m.add_argument("--label-column", dest="data.label_column", default=None)
    m.add_argument("--id-column", dest="data.id_column", default=None)
    m.add_argument("--created-at-column", dest="data.created_at_column", default=None)
    m.add_argument(
        "--label-map",
        dest="data.label_map",
        default=None,
        type=parse_label_map,
        help="raw=Canonical pairs, e.g. 'Bullish=Positive,Bearish=Negative'",
    )


def parse_label_map(value: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in value.split(","):
        if not pair.strip():
            continue
        if "=" not in pair:
            raise argparse.ArgumentTypeError(
                f"label map entry {pair!r} is not raw=Canonical (e.g. Bullish=Positive)"
            )
        raw, canonical = pair.split("=", 1)
        mapping[raw.strip()] = canonical.strip()
    return mapping


def dotted_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags whose dest is a dotted settings path (e.g. `kafka.bootstrap_servers`)."""
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    """Build the settings tree once, configure logging once, and hand both down."""
    overrides = dotted_overrides(args)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    if getattr(args, "log_format", None):
        overrides["log_format"] = args.log_format
    env_file = getattr(args, "env_file", None)
    try:
        settings = load_settings(overrides, env_file=env_file)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(
            f"invalid setting {where}: {first['msg']}",
            hint="check the flag or the CRYPTOSENT_ environment variable of that name",
        ) from None
    except ValueError as exc:
        raise UserError(str(exc), hint="see `Settings` in ops/settings.py for the names") from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def stop_on_signals(second: Literal["exit", "raise"] = "exit") -> threading.Event:
    """The first SIGINT/SIGTERM sets the returned event (finish in-flight work, exit 0). A second
    one exits at once: `exit` ends the process with 130; `raise` raises KeyboardInterrupt, so
    context managers still stop child processes such as the embedded broker."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            if second == "raise":
                raise KeyboardInterrupt
            print("second signal: exiting now", file=sys.stderr, flush=True)
            os._exit(130)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    return stop
