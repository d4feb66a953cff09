"""`python -m tests.integration.slow_serve SECONDS serve ARGS...`: `cryptosent serve` whose model
is wrapped in `SlowBackend`, so process tests can interrupt it mid-stream. The slowing lives
here, in the tests, not in the service."""

from __future__ import annotations

import sys
from typing import Any

import stream.backends
from cryptosent.cli import main
from tests.integration.stream_helpers import SlowBackend


def run(argv: list[str]) -> int:
    delay = float(argv[0])
    real = stream.backends.load_backend

    def slow(model: Any, **kwargs: Any) -> Any:
        return SlowBackend(real(model, **kwargs), delay)

    stream.backends.load_backend = slow  # type: ignore[assignment]
    return main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
