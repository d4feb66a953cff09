"""A rolling sentiment index over event-time windows. Pure: no Kafka, no clock, no I/O.
`stream.apps.alerts` feeds it records; `stream.core.rules` judges the windows it closes.

Windows are tumbling and aligned to the epoch (a 60 s window starts on a multiple of 60 s, UTC),
one series per configured length. Tumbling rather than sliding: each record belongs to exactly one
window per length, a closed window is final, and (kind, length, start) is a stable identity from
which a deterministic alert id follows.

A window closes when the watermark passes its end. The watermark is the event time the stream is
known to have reached, minus the allowed lateness. It is tracked per source (Kafka partition):
while sources are catching up, the slowest active one bounds it, so a backlog read partition by
partition does not make the other partitions' records late; a source that reached its end is
idle and stops holding it back. Once every source is caught up it is simply the maximum event
time seen minus the allowed lateness.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC

from schemas.messages import Label, SentimentOut, Status


@dataclass(frozen=True, slots=True)
class Observation:
    """What the index needs of one output record."""

    event_time: float  # epoch seconds
    classified: bool
    positive: bool = False
    p_positive: float | None = None

    @classmethod
    def from_record(cls, record: SentimentOut) -> Observation:
        # Tweets without a created_at are placed by when they were classified: better than
        # dropping them, and within seconds of the truth for live traffic.
        when = record.event_time or record.processed_time
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        classified = record.status is Status.CLASSIFIED
        return cls(
            event_time=when.timestamp(),
            classified=classified,
            positive=classified and record.label is Label.POSITIVE,
            p_positive=record.p_positive if classified else None,
        )


@dataclass(slots=True)
class WindowStats:
    window_s: int
    start: int  # epoch seconds, a multiple of window_s
    classified: int = 0
    positive: int = 0
    skipped: int = 0
    sum_p_positive: float = 0.0

    @property
    def end(self) -> int:
        return self.start + self.window_s

    @property
    def volume(self) -> int:
        return self.classified

    @property
    def bullish_ratio(self) -> float | None:
        return self.positive / self.classified if self.classified else None

    @property
    def mean_p_positive(self) -> float | None:
        if not self.classified:
            return None
        # Summing floats can overshoot 1.0 by an ulp; the schema bounds the value to [0, 1].
        return min(1.0, max(0.0, self.sum_p_positive / self.classified))

    def add(self, obs: Observation) -> None:
        if obs.classified:
            self.classified += 1
            self.positive += int(obs.positive)
            self.sum_p_positive += obs.p_positive if obs.p_positive is not None else 0.0
        else:
            self.skipped += 1


def window_start(event_time: float, window_s: int) -> int:
    return math.floor(event_time / window_s) * window_s


class Watermark:
    """Event-time progress over several sources; never moves backwards.

    `expect` names sources that must report (a record or `idle`) before the watermark may move,
    so that a source whose first fetch is still in flight is not overtaken. A source is active
    from its first record until `idle` (it reached its end of data); the watermark is the minimum
    of the active sources' maxima, or the maximum of all when none is active, minus the lateness.
    """

    def __init__(self, allowed_lateness_s: float) -> None:
        self.allowed_lateness_s = allowed_lateness_s
        self._max: dict[Hashable, float] = {}
        self._idle: set[Hashable] = set()
        self._pending: set[Hashable] = set()
        self._value: float | None = None

    def expect(self, sources: Iterable[Hashable]) -> None:
        self._pending.update(s for s in sources if s not in self._max and s not in self._idle)

    def observe(self, source: Hashable, event_time: float) -> None:
        self._pending.discard(source)
        self._idle.discard(source)
        if event_time > self._max.get(source, -math.inf):
            self._max[source] = event_time
        self._advance()

    def idle(self, source: Hashable) -> None:
        self._pending.discard(source)
        self._idle.add(source)
        self._advance()

    def seen(self, source: Hashable) -> bool:
        return source in self._max

    @property
    def value(self) -> float | None:
        return self._value

    def _advance(self) -> None:
        if self._pending or not self._max:
            return
        active = [t for s, t in self._max.items() if s not in self._idle]
        reached = min(active) if active else max(self._max.values())
        candidate = reached - self.allowed_lateness_s
        if self._value is None or candidate > self._value:
            self._value = candidate


class SentimentIndex:
    """Tumbling windows of every configured length, closed by one shared watermark."""

    def __init__(
        self,
        windows_s: Sequence[int],
        allowed_lateness_s: float,
        *,
        max_gap_windows: int = 100,
    ) -> None:
        if not windows_s or any(w <= 0 for w in windows_s):
            raise ValueError("windows_s needs at least one positive length")
        self.windows_s = tuple(sorted(set(windows_s)))
        self.watermark = Watermark(allowed_lateness_s)
        # A silent gap (or a jump in event time) yields empty windows, which matter to the
        # trailing volume mean; only the last max_gap_windows of them are emitted because the
        # rules never look further back than that.
        self.max_gap_windows = max_gap_windows
        self._open: dict[int, dict[int, WindowStats]] = {w: {} for w in self.windows_s}
        # End of the last closed window per length: every window ending at or before it is final.
        self._frontier: dict[int, int | None] = dict.fromkeys(self.windows_s)
        self.dropped_late: dict[int, int] = dict.fromkeys(self.windows_s, 0)

    def add(self, obs: Observation, source: Hashable = 0) -> list[int]:
        """Count a record; returns the window lengths for which it came too late (dropped)."""
        wm = self.watermark.value
        dropped = []
        for w in self.windows_s:
            start = window_start(obs.event_time, w)
            # Per record, not per batch: a window past the watermark is closed whether or not
            # `close_ready` has run yet, so the outcome does not depend on batch boundaries.
            if wm is not None and start + w <= wm:
                self.dropped_late[w] += 1
                dropped.append(w)
                continue
            opened = self._open[w]
            stats = opened.get(start)
            if stats is None:
                stats = opened[start] = WindowStats(w, start)
            stats.add(obs)
        self.watermark.observe(source, obs.event_time)
        return dropped

    def expect(self, sources: Iterable[Hashable]) -> None:
        self.watermark.expect(sources)

    def idle(self, source: Hashable) -> None:
        self.watermark.idle(source)

    def close_ready(self) -> list[WindowStats]:
        """Every window whose end the watermark has passed, oldest end first."""
        wm = self.watermark.value
        if wm is None:
            return []
        closed: list[WindowStats] = []
        for w in self.windows_s:
            opened = self._open[w]
            frontier = self._frontier[w]
            if frontier is None:
                if not opened:
                    continue
                frontier = min(opened)
            last_end = window_start(wm, w)
            if last_end <= frontier:
                continue
            count = (last_end - frontier) // w
            if count <= self.max_gap_windows:
                starts: Iterable[int] = range(frontier, last_end, w)
            else:
                recent = range(last_end - self.max_gap_windows * w, last_end, w)
                starts = sorted({s for s in opened if s < last_end} | set(recent))
            closed.extend(opened.pop(s) if s in opened else WindowStats(w, s) for s in starts)
            self._frontier[w] = last_end
        closed.sort(key=lambda s: (s.end, s.window_s))
        return closed

    def open_windows(self) -> list[WindowStats]:
        return sorted(
            (s for opened in self._open.values() for s in opened.values()),
            key=lambda s: (s.start, s.window_s),
        )
