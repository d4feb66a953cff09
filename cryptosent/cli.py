"""`cryptosent`: one CLI, one settings tree built here and passed down."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ops.errors import UserError

# Each module defines `register(subparsers)`; the parser it adds carries `handler(args) -> int`.
COMMAND_MODULES = (
    "data",
    "train",
    "evaluate",
    "export",
    "broker",
    "serve",
    "replay",
    "tail",
    "alerts",
    "dashboard",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptosent",
        description="Streaming sentiment for crypto tweets: train, evaluate, serve, replay.",
    )
    from cryptosent import __version__

    parser.add_argument("--version", action="version", version=f"cryptosent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"cryptosent.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except UserError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code
