"""A rolling sentiment index over event-time windows, and the rules that turn a closed window into
an alert. Pure logic: no Kafka, no clock, no I/O. `stream.alerts_consumer` feeds it records and
publishes what it decides.

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

import hashlib
import math
import statistics
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum

from ops.settings import AlertsSettings
from schemas.alerts import Alert, AlertDirection, AlertKind
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


class _Side(IntEnum):
    LOW = -1
    MID = 0
    HIGH = 1


@dataclass(frozen=True, slots=True)
class RuleConfig:
    threshold_high: float = 0.7
    threshold_low: float = 0.3
    zscore_k: float = 3.0
    zscore_min_std: float = 0.02
    trailing_windows: int = 20
    min_trailing_windows: int = 5
    volume_spike_factor: float = 3.0
    min_volume: int = 10

    @classmethod
    def from_settings(cls, s: AlertsSettings) -> RuleConfig:
        return cls(
            threshold_high=s.bullish_threshold_high,
            threshold_low=s.bullish_threshold_low,
            zscore_k=s.zscore_k,
            zscore_min_std=s.zscore_min_std,
            trailing_windows=s.trailing_windows,
            min_trailing_windows=s.min_trailing_windows,
            volume_spike_factor=s.volume_spike_factor,
            min_volume=s.min_volume,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule fired on a closed window."""

    kind: AlertKind
    direction: AlertDirection
    window: WindowStats
    value: float
    baseline: float
    zscore: float | None = None


@dataclass(slots=True)
class _History:
    # Ratios of qualifying windows (volume >= min_volume) and volumes of all closed windows.
    ratios: deque[float]
    volumes: deque[int]
    side: _Side | None = None
    ratio_outlier: AlertDirection | None = None
    spiking: bool = False


@dataclass
class AlertRules:
    """Evaluates each closed window once, in order, per window length.

    Every rule is edge-triggered: it fires on the window where its condition becomes true and
    stays quiet while it remains true, so a market that stays bullish for an hour produces one
    threshold alert, not sixty. For the threshold rule "previous" is the previous qualifying
    window; with no previous window there is no crossing.
    """

    config: RuleConfig
    _history: dict[int, _History] = field(default_factory=dict)

    def _state(self, window_s: int) -> _History:
        state = self._history.get(window_s)
        if state is None:
            n = self.config.trailing_windows
            state = self._history[window_s] = _History(deque(maxlen=n), deque(maxlen=n))
        return state

    def evaluate(self, window: WindowStats) -> list[Decision]:
        cfg = self.config
        state = self._state(window.window_s)
        decisions: list[Decision] = []

        spiking = False
        if len(state.volumes) >= cfg.min_trailing_windows:
            mean_volume = statistics.fmean(state.volumes)
            spiking = (
                window.volume >= cfg.min_volume
                and window.volume > cfg.volume_spike_factor * mean_volume
            )
            if spiking and not state.spiking:
                decisions.append(
                    Decision(
                        AlertKind.VOLUME_SPIKE,
                        AlertDirection.UP,
                        window,
                        value=float(window.volume),
                        baseline=mean_volume,
                    )
                )
        state.spiking = spiking
        state.volumes.append(window.volume)

        ratio = window.bullish_ratio
        if ratio is None or window.volume < cfg.min_volume:
            return decisions

        side = (
            _Side.HIGH
            if ratio >= cfg.threshold_high
            else _Side.LOW
            if ratio <= cfg.threshold_low
            else _Side.MID
        )
        if state.side is not None and side is not _Side.MID and side != state.side:
            up = side is _Side.HIGH
            decisions.append(
                Decision(
                    AlertKind.THRESHOLD_CROSSED,
                    AlertDirection.UP if up else AlertDirection.DOWN,
                    window,
                    value=ratio,
                    baseline=cfg.threshold_high if up else cfg.threshold_low,
                )
            )
        state.side = side

        outlier: AlertDirection | None = None
        if len(state.ratios) >= cfg.min_trailing_windows:
            mean = statistics.fmean(state.ratios)
            std = max(statistics.stdev(state.ratios), cfg.zscore_min_std)
            z = (ratio - mean) / std
            if abs(z) > cfg.zscore_k:
                outlier = AlertDirection.UP if z > 0 else AlertDirection.DOWN
                if outlier != state.ratio_outlier:
                    decisions.append(
                        Decision(AlertKind.ZSCORE, outlier, window, ratio, mean, zscore=z)
                    )
        state.ratio_outlier = outlier
        state.ratios.append(ratio)
        return decisions


def alert_id(kind: AlertKind, window_s: int, window_start_s: int) -> str:
    """Deterministic: the same window and rule give the same id in every run and on every host."""
    raw = f"{kind.value}:{window_s}:{window_start_s}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def describe(decision: Decision) -> str:
    w = decision.window
    where = f"{w.window_s}s window {_utc(w.start):%Y-%m-%d %H:%M:%S}Z"
    if decision.kind is AlertKind.THRESHOLD_CROSSED:
        how = "above" if decision.direction is AlertDirection.UP else "below"
        return (
            f"bullish ratio {decision.value:.2f} crossed {how} {decision.baseline:.2f} "
            f"in the {where} ({w.volume} classified)"
        )
    if decision.kind is AlertKind.ZSCORE:
        return (
            f"bullish ratio {decision.value:.2f} is {decision.zscore:+.1f} standard deviations "
            f"from its trailing mean {decision.baseline:.2f} in the {where}"
        )
    return (
        f"volume {w.volume} is {decision.value / max(decision.baseline, 1e-9):.1f}x the "
        f"trailing mean {decision.baseline:.1f} in the {where}"
    )


def build_alert(decision: Decision, emitted_at: datetime) -> Alert:
    w = decision.window
    return Alert(
        alert_id=alert_id(decision.kind, w.window_s, w.start),
        kind=decision.kind,
        direction=decision.direction,
        window_s=w.window_s,
        window_start=_utc(w.start),
        window_end=_utc(w.end),
        bullish_ratio=w.bullish_ratio,
        mean_p_positive=w.mean_p_positive,
        volume=w.volume,
        skipped=w.skipped,
        value=decision.value,
        baseline=decision.baseline,
        zscore=decision.zscore,
        message=describe(decision),
        emitted_at=emitted_at,
    )
