"""Stream a CSV into a topic as `TweetIn` JSON, at a steady rate or as fast as possible.

Pacing uses absolute deadlines (message i is due at start + i / rate): a late wake-up is made up
by the next messages instead of accumulating, which keeps the achieved rate within a percent or
two of the target even at 1,000 msg/s, where sleeping 1/rate per message would lose 10-20 %.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from ops.errors import UserError
from ops.logging import get_logger
from ops.settings import DataSettings, KafkaSettings
from schemas.messages import Label
from stream.core import parse_event_time

log = get_logger(__name__)

_ID_CANDIDATES = ("message_id", "id")
_CREATED_CANDIDATES = ("created_at",)


class ReplayProducer(Protocol):
    """What replay needs of a producer: confluent-kafka's, or a test's fake."""

    def produce(
        self, topic: str, *, value: bytes, key: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


class RateSchedule:
    """Absolute-deadline pacing. `rate` None or <= 0 means as fast as possible."""

    def __init__(self, rate: float | None, start: float) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.start = start

    def due_at(self, index: int) -> float:
        """When the message with this 0-based index may be sent."""
        return self.start if self.rate is None else self.start + index / self.rate

    def allowed(self, now: float) -> int | None:
        """How many messages in total may have been sent by `now` (None: unlimited)."""
        if self.rate is None:
            return None
        if now < self.start:
            return 0
        return int((now - self.start) * self.rate) + 1

    def wait_s(self, sent: int, now: float) -> float:
        """How long to wait before the next message (index `sent`) is due."""
        return max(0.0, self.due_at(sent) - now)


@dataclass(frozen=True, slots=True)
class ReplayRow:
    id: str
    text: str
    created_at: str | None  # ISO 8601, already normalised
    label: Label | None


@dataclass
class ReplaySummary:
    topic: str
    sent: int = 0
    bad_rows: int = 0
    failed: int = 0
    seconds: float = 0.0
    target_rate: float | None = None
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        target = f", target {self.target_rate:g}/s" if self.target_rate else ""
        failed = f", {self.failed} failed" if self.failed else ""
        stopped = " (interrupted)" if self.interrupted else ""
        return (
            f"replay: sent {self.sent} to {self.topic}, {self.bad_rows} bad rows{failed}, "
            f"{self.seconds:.2f}s, {self.rate:.1f} msg/s{target}{stopped}"
        )


_TO_LABEL: dict[str, Label | None] = {
    "Positive": Label.POSITIVE,
    "Negative": Label.NEGATIVE,
    "Neutral": None,
}


def label_lookup(raws: list[str], label_map: dict[str, str]) -> dict[str, Label | None]:
    """Raw CSV label -> Label for every distinct non-empty value, through `ops.csvio`'s mapping
    (so an unknown value is the same one-line UserError as in training). Neutral -> no label."""
    from ops.csvio import canonical_labels

    distinct = sorted({r for r in raws if r.strip()})
    return {
        raw: _TO_LABEL[canonical]
        for raw, canonical in zip(distinct, canonical_labels(distinct, label_map), strict=True)
    }


def _auto_column(
    columns: list[str], explicit: str | None, candidates: tuple[str, ...]
) -> str | None:
    if explicit is not None:
        return explicit  # already checked by resolve_columns
    return next((c for c in candidates if c in columns), None)


def _cell(value: Any) -> str | None:
    # read_csv_strings gives "" for empty cells; None/NaN only if a caller passes other frames.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def load_rows(
    path: Path, data: DataSettings, *, keep_event_time: bool
) -> tuple[list[ReplayRow], int]:
    """The replayable rows of a CSV and the number of bad rows (empty text; with
    `keep_event_time`, a missing or unreadable created_at)."""
    from ops.csvio import read_csv_strings, resolve_columns

    frame, _encoding = read_csv_strings(path)
    columns = [str(c) for c in frame.columns]
    cols = resolve_columns(frame, data, need_label=False)
    id_col = _auto_column(columns, cols.id, _ID_CANDIDATES)
    created_col = _auto_column(columns, cols.created_at, _CREATED_CANDIDATES)
    texts = [_cell(v) for v in frame[cols.text].tolist()]
    n = len(texts)
    ids = [_cell(v) for v in frame[id_col].tolist()] if id_col else [None] * n
    created = [_cell(v) for v in frame[created_col].tolist()] if created_col else [None] * n
    raw_labels = [_cell(v) or "" for v in frame[cols.label].tolist()] if cols.label else [""] * n
    labels = label_lookup(raw_labels, data.label_map)
    stem = path.stem
    rows: list[ReplayRow] = []
    bad = 0
    for i in range(n):
        text = texts[i]
        if text is None or not text.strip():
            bad += 1
            continue
        row_id = (ids[i] or "").strip() or f"{stem}-{i}"
        created_iso: str | None = None
        if keep_event_time:
            try:
                when = parse_event_time(created[i] or None)
            except (TypeError, ValueError, OverflowError, OSError):
                when = None
            if when is None:
                bad += 1
                continue
            created_iso = when.isoformat().replace("+00:00", "Z")
        rows.append(
            ReplayRow(
                id=row_id,
                text=text,
                created_at=created_iso,
                label=labels.get(raw_labels[i]),
            )
        )
    return rows, bad


def iter_messages(
    rows: list[ReplayRow], *, loop: bool, limit: int | None
) -> Iterator[tuple[int, ReplayRow]]:
    """(pass number, row) in send order; pass 0 is the file itself, pass N>0 a `--loop` repeat."""
    if not rows:
        return
    sent = 0
    n_pass = 0
    while True:
        for row in rows:
            if limit is not None and sent >= limit:
                return
            yield n_pass, row
            sent += 1
        if not loop:
            return
        n_pass += 1


def tweet_json(row: ReplayRow, n_pass: int, now: datetime) -> tuple[bytes, bytes]:
    """(key, value) for one message: ids of repeated passes get `-loopN` so they stay unique."""
    tweet_id = row.id if n_pass == 0 else f"{row.id}-loop{n_pass}"
    body: dict[str, Any] = {
        "id": tweet_id,
        "text": row.text,
        "created_at": row.created_at or now.isoformat().replace("+00:00", "Z"),
    }
    if row.label is not None:
        body["label"] = row.label.value
    return tweet_id.encode("utf-8"), json.dumps(body, ensure_ascii=False).encode("utf-8")


def replay(
    kafka: KafkaSettings,
    csv_path: Path,
    topic: str,
    *,
    rate: float | None = None,
    limit: int | None = None,
    loop: bool = False,
    keep_event_time: bool = False,
    data: DataSettings | None = None,
    progress: bool | None = None,
    stop: threading.Event | None = None,
    producer: ReplayProducer | None = None,
    clock: Callable[[], float] = time.monotonic,
    progress_file: TextIO | None = None,
) -> ReplaySummary:
    """Send the CSV to `topic`; returns what was sent. `progress` None = a bar only on a TTY.
    `producer` and `clock` are injectable for tests; by default an idempotent confluent-kafka
    Producer and the monotonic clock. Pacing waits inside `producer.poll(timeout)`, so a fake
    producer whose poll advances a fake clock replays without sleeping."""
    rows, bad = load_rows(Path(csv_path), data or DataSettings(), keep_event_time=keep_event_time)
    summary = ReplaySummary(topic=topic, bad_rows=bad, target_rate=rate if rate else None)
    if not rows:
        raise UserError(f"{csv_path} has no replayable rows ({bad} bad rows)")
    if producer is None:
        from confluent_kafka import Producer

        from ops.kafka import check_topics, producer_config

        check_topics(kafka, [topic])
        sink: ReplayProducer = Producer(producer_config(kafka))
    else:
        sink = producer

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            summary.failed += 1
            if summary.failed <= 5:
                log.warning("replay_delivery_failed", error=str(err))

    total = limit if limit is not None else (None if loop else len(rows))
    from tqdm import tqdm

    stream_out = progress_file or sys.stderr
    show = progress if progress is not None else stream_out.isatty()
    bar = tqdm(total=total, unit="msg", file=stream_out, disable=not show, dynamic_ncols=True)
    warm_up = getattr(sink, "list_topics", None)
    if callable(warm_up):
        # Connect before the clock starts: the first seconds would otherwise measure the
        # connection set-up, not the pacing.
        warm_up(topic, timeout=10.0)
    schedule = RateSchedule(rate, clock())
    sent = 0
    try:
        for n_pass, row in iter_messages(rows, loop=loop, limit=limit):
            if stop is not None and stop.is_set():
                summary.interrupted = True
                break
            wait = schedule.wait_s(sent, clock())
            while wait > 0:
                # poll() doubles as the sleep: delivery reports are served while waiting.
                sink.poll(wait)
                wait = schedule.wait_s(sent, clock())
            key, value = tweet_json(row, n_pass, datetime.now(UTC))
            while True:
                try:
                    sink.produce(topic, value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    sink.poll(0.05)
            sent += 1
            if sent % 64 == 0:
                sink.poll(0)
            bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        remaining = sink.flush(30.0)
        summary.sent = sent - summary.failed - (remaining or 0)
        summary.failed += remaining or 0
        summary.seconds = max(clock() - schedule.start, 1e-9)
    return summary
