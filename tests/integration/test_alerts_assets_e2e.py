"""Per-asset alerts end to end (issue 12): replay a CSV -> serve (the tiny BERT's tokenizer and
text pipeline, labels decided by a word) -> output topic with `assets` -> `cryptosent alerts`
-> alerts topic. An ETH-only sentiment shift fires an ETH alert and none for BTC (nor for all
assets, whose ratio stays under the threshold); a second `alerts` with a fresh group re-derives
it and does not publish it again (its id, asset included, is read back from the alerts topic).

Deterministic: the labels come from `WordLabels` (bullish/bearish in the text), the event times
from the CSV's created_at (`replay --keep-event-time`), and the watermark is pushed by one last
record far in event time, replayed only once `alerts` counted every other one; nothing waits on a
sleep or on wall-clock windows. The allowed lateness spans the whole synthetic stream, so
however the two partitions interleave (a caught-up consumer reads one partition's batch before
the other's), no record is late.
"""

from __future__ import annotations

import csv
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ops.settings import KafkaSettings, Settings
from schemas.alerts import Alert, AlertDirection, AlertKind
from schemas.messages import SentimentOut, Status
from stream.apps.alerts import AlertsService
from stream.apps.replay import replay
from stream.core.rules import alert_id
from tests.integration.stream_helpers import WorkerThread
from tests.integration.synthetic import T0, read_all, wait_until

pytestmark = pytest.mark.integration

W = 60
PER_ASSET = 10  # posts per asset per window
LATENESS_S = 10 * W  # more than the span of the synthetic stream (6 windows)


class WordLabels:
    """The tiny model with its forward pass replaced: POSITIVE when the post says "bullish",
    NEGATIVE when it says "bearish". Tokenizer, text pipeline and everything else are the
    artifact's, so the records go through serve exactly as a real model's would."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        [[self._bull]] = [self._word_ids(inner, "bullish")]
        [[self._bear]] = [self._word_ids(inner, "bearish")]

    @staticmethod
    def _word_ids(inner: Any, word: str) -> list[int]:
        empty = set(inner.encode([""]).input_ids[0])
        return [i for i in inner.encode([word]).input_ids[0] if i not in empty]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def forward_logits(self, batch_ids: Sequence[Sequence[int]]) -> np.ndarray:
        rows = []
        for ids in batch_ids:
            if self._bull in ids:
                rows.append([-3.0, 3.0])  # labels are (NEGATIVE, POSITIVE)
            elif self._bear in ids:
                rows.append([3.0, -3.0])
            else:
                raise AssertionError(f"a test post without a label word: {ids}")
        return np.array(rows, dtype=np.float32)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z")


def posts() -> list[dict[str, str]]:
    """ETH: windows 0-2 at 5/10 bullish, windows 3-5 at 9/10 (crossing 0.7 at window 3). BTC:
    5/10, then 4/10 from window 3, so all assets go 0.5 -> 0.65 (no crossing). The last post,
    in window 20, moves the watermark (LATENESS_S) to the end of window 9."""
    rows = []
    for w in range(6):
        eth_bull = 5 if w < 3 else 9
        btc_bull = 5 if w < 3 else 4
        for i in range(PER_ASSET):
            t0 = T0 + w * W
            eth = "bullish" if i < eth_bull else "bearish"
            btc = "bullish" if i < btc_bull else "bearish"
            rows.append({"id": f"e{w}-{i}", "text": f"$ETH looks {eth} to me today", "at": t0 + i})
            rows.append(
                {"id": f"b{w}-{i}", "text": f"Bitcoin looks {btc} to me now", "at": t0 + 20 + i}
            )
    rows.append({"id": "last", "text": "$ETH looks bearish to me later", "at": T0 + 20 * W})
    return [{"id": r["id"], "text": r["text"], "created_at": iso(float(r["at"]))} for r in rows]


def test_eth_only_shift_fires_eth_alerts_and_none_for_btc(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    from stream.inference import load_model
    from tests.tiny_model import make_tiny_artifact

    inp, out = make_topic("in", 2), make_topic("out", 2)
    dlq, alerts = make_topic("dlq"), make_topic("alerts")
    settings = Settings(
        _env_file=None,
        kafka=kafka_settings,
        topics={"input": [inp], "output": out, "dead_letter": dlq, "alerts": alerts},
        model={"batch_size": 16, "device": "cpu"},
        stream={
            "group_id": f"serve-{uuid.uuid4().hex[:8]}",
            "session_timeout_ms": 6000,
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
            "batch_linger_ms": 20,
        },
        alerts={
            "group_id": f"alerts-{uuid.uuid4().hex[:8]}",
            "windows_s": [W],
            "allowed_lateness_s": LATENESS_S,
            "min_volume": 20,  # the all-assets windows hold 20 posts
            "zscore_k": 50.0,  # about the threshold rule; z-scores and spikes have unit tests
            "volume_spike_factor": 10.0,
            "session_timeout_ms": 6000,
            "commit_interval_s": 0.5,
            "assets": {"tickers": ["BTC"], "top_n": 2, "rules": {"*": {"min_volume": 5}}},
        },
    )
    rows = posts()
    body, last = tmp_path / "posts.csv", tmp_path / "last.csv"
    for path, part in ((body, rows[:-1]), (last, rows[-1:])):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "text", "created_at"])
            writer.writeheader()
            writer.writerows(part)

    model = WordLabels(load_model(make_tiny_artifact(tmp_path / "model"), device="cpu"))
    fired: list[Alert] = []
    service = AlertsService(settings.alerts, settings.kafka, settings.topics, on_alert=fired.append)
    stop_alerts = threading.Event()
    alerts_thread = threading.Thread(target=service.run, args=(stop_alerts,), daemon=True)
    serve = WorkerThread(settings, model, max_messages=len(rows))  # type: ignore[arg-type]
    alerts_thread.start()
    serve.start()
    try:
        wait_until(service.assigned.is_set, 30, "the alerts consumer's assignment")
        wait_until(lambda: bool(serve.worker.assigned), 60, "serve's assignment")
        sent = replay(kafka_settings, body, inp, keep_event_time=True, progress=False)
        assert sent.sent == len(rows) - 1
        wait_until(lambda: service.stats.counted == len(rows) - 1, 60, "alerts to count them")
        assert service.stats.fired == 0  # no window closed yet
        replay(kafka_settings, last, inp, keep_event_time=True, progress=False)
        serve.join(90)  # max_messages: serve stops after the last post

        outputs = [SentimentOut.model_validate_json(v) for v in read_all(kafka_settings, out)]
        assert len(outputs) == len(rows)
        assert all(o.status is Status.CLASSIFIED for o in outputs)
        assert {o.id: o.assets for o in outputs}["e3-0"] == ["ETH"]
        assert {o.id: o.assets for o in outputs}["b3-0"] == ["BTC"]

        wait_until(lambda: service.stats.windows_closed >= 3 * 7, 60, "windows 0-6 to close")
        wait_until(lambda: service.stats.fired >= 1, 10, "the ETH alert")
    finally:
        serve.stop.set()
        stop_alerts.set()
        alerts_thread.join(30)
    assert not alerts_thread.is_alive()

    published = [Alert.model_validate_json(v) for v in read_all(kafka_settings, alerts)]
    assert [a.alert_id for a in published] == [a.alert_id for a in fired]
    assert [(a.asset, a.kind, a.direction, a.window_start.timestamp()) for a in published] == [
        ("ETH", AlertKind.THRESHOLD_CROSSED, AlertDirection.UP, T0 + 3 * W)
    ]
    [eth] = published
    assert eth.alert_id == alert_id(AlertKind.THRESHOLD_CROSSED, W, T0 + 3 * W, "ETH")
    assert (eth.volume, eth.bullish_ratio) == (PER_ASSET, pytest.approx(0.9))
    assert service.stats.assets == ["BTC", "ETH"]  # BTC pinned and judged: no alert
    assert service.stats.dropped_late == 0

    # A fresh group re-derives the ETH alert from the look-back; its id (asset included) is read
    # back from the alerts topic, so it is not published again.
    fresh = settings.alerts.model_copy(update={"group_id": f"alerts-{uuid.uuid4().hex[:8]}"})
    again = AlertsService(fresh, settings.kafka, settings.topics)
    stop_again = threading.Event()
    thread = threading.Thread(target=again.run, args=(stop_again,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: again.stats.suppressed_duplicate >= 1, 60, "the re-derived ETH alert")
    finally:
        stop_again.set()
        thread.join(30)
    assert (again.stats.fired, again.stats.suppressed_duplicate) == (0, 1)
    assert len(read_all(kafka_settings, alerts)) == 1
