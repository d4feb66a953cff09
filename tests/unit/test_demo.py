"""The demo's pacing (replay below what serve holds) and its log file; no broker, no model."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cryptosent.commands.demo import default_log_path, logs_to_file
from cryptosent.demo_pace import (
    HEADROOM,
    MAX_REPLAY_S,
    MIN_LIMIT,
    choose_pace,
    measure_capacity,
)
from ops.logging import get_logger
from schemas.messages import Label
from stream.core.planning import Encoded


def test_pace_caps_the_default_rate_below_capacity() -> None:
    pace = choose_pace(rate=200.0, limit=2000, capacity=80.0, rate_set=False, limit_set=False)
    assert pace.rate == pytest.approx(HEADROOM * 80.0, abs=0.05)
    assert pace.rate < 80.0
    assert "80 tweets/s" in pace.reason


def test_pace_keeps_a_slower_configured_rate() -> None:
    pace = choose_pace(rate=20.0, limit=500, capacity=1000.0, rate_set=False, limit_set=False)
    assert pace.rate == 20.0
    assert pace.limit == 500


def test_pace_limits_the_replay_to_about_a_minute() -> None:
    pace = choose_pace(rate=200.0, limit=2000, capacity=30.0, rate_set=False, limit_set=False)
    assert pace.limit == int(pace.rate * MAX_REPLAY_S)
    assert pace.limit < 2000
    slow = choose_pace(rate=200.0, limit=2000, capacity=1.0, rate_set=False, limit_set=False)
    assert slow.limit == MIN_LIMIT


def test_pace_never_overrides_what_the_user_set() -> None:
    pace = choose_pace(rate=500.0, limit=5000, capacity=10.0, rate_set=True, limit_set=True)
    assert (pace.rate, pace.limit) == (500.0, 5000)
    assert pace.reason == "as requested"


def test_pace_without_a_capacity_uses_the_configured_rate() -> None:
    pace = choose_pace(rate=200.0, limit=2000, capacity=None, rate_set=False, limit_set=False)
    assert pace.rate == 200.0
    assert pace.reason == "capacity unknown"


@dataclass
class Clean:
    text: str | None
    kept: bool = True


class Pipeline:
    def process_batch(self, texts: list[str]) -> list[Clean]:
        return [Clean(t) if t else Clean(None, kept=False) for t in texts]


@dataclass
class ClockedBackend:
    """Each forward call advances a fake clock by 10 ms plus 1 ms per row."""

    now: list[float] = field(default_factory=lambda: [0.0])
    threads_seen: list[tuple[str, int | None]] = field(default_factory=list)
    forward_threads: set[str] = field(default_factory=set)
    name: str = "fake"
    model_version: str = "fake-v1"
    labels: Sequence[Label] = (Label.NEGATIVE, Label.POSITIVE)
    temperature: float = 1.0
    call_overhead_tokens: float = 1000.0

    def init_thread(self, threads: int | None) -> None:
        self.threads_seen.append((threading.current_thread().name, threads))

    def encode(self, texts: Sequence[str]) -> Encoded:
        return Encoded([[1] * len(t.split()) for t in texts])

    def forward_logits(self, batch_ids: Sequence[Sequence[int]]) -> np.ndarray:
        self.forward_threads.add(threading.current_thread().name)
        self.now[0] += 0.010 + 0.001 * len(batch_ids)
        return np.zeros((len(batch_ids), 2))


def test_capacity_times_the_work_after_a_warm_up_on_the_inference_thread() -> None:
    backend = ClockedBackend()
    texts = ["warm"] * 8 + ["a tweet"] * 64
    capacity = measure_capacity(backend, Pipeline(), texts, 32, 3, clock=lambda: backend.now[0])
    # 64 timed tweets in 2 calls of 32 (the 8 warm-up tweets are not timed): 2 x 42 ms.
    assert capacity == pytest.approx(64 / 0.084)
    assert backend.threads_seen == [("demo-capacity", 3)]
    assert backend.forward_threads == {"demo-capacity"}


def test_capacity_is_unknown_when_nothing_is_timed() -> None:
    backend = ClockedBackend()
    assert measure_capacity(backend, Pipeline(), ["a"] * 8, 32, None) is None


def test_logs_go_to_the_file_as_json_and_stdout_stays(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "runs" / "demo.log"
    with logs_to_file(path, "INFO"):
        get_logger("test").info("inside_demo", n=1)
        logging.getLogger("onnxruntime").warning("a library warning")
        os.write(2, b"native library line\n")
        print("progress line", flush=True)
    print("after", file=sys.stderr, flush=True)
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    assert record["event"] == "inside_demo"
    assert record["n"] == 1
    assert "native library line" in lines
    library = json.loads(lines[1])
    assert (library["event"], library["level"]) == ("a library warning", "warning")
    out, err = capfd.readouterr()
    assert "progress line" in out
    assert "inside_demo" not in err
    assert "after" in err


def test_default_log_path_is_under_runs() -> None:
    path = default_log_path(datetime(2026, 12, 4, 5, 6, 7, tzinfo=UTC))
    assert path == Path("runs/demo-20261204T050607Z.log")
