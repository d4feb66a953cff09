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

Beside the all-assets series, the index keeps one series per tracked asset (`AssetScope`): the
tickers pinned in the settings plus up to `top_n` others chosen by volume. All series share the
one watermark, so a record is late for an asset exactly when it is late for all assets.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Literal

from schemas.messages import Label, SentimentOut, Status


@dataclass(frozen=True, slots=True)
class Observation:
    """What the index needs of one output record."""

    event_time: float  # epoch seconds
    classified: bool
    positive: bool = False
    p_positive: float | None = None
    # Canonical tickers the record names, primary first (SentimentOut.assets).
    assets: tuple[str, ...] = ()

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
            assets=tuple(record.assets),
        )


def is_fanout_copy(key: bytes | None, record: SentimentOut) -> bool:
    """A second or later copy of one input under `stream.output_key=asset_fanout`: the same value
    keyed by another of its assets. An index counts each input once, on the copy keyed by the
    primary asset (or the tweet id, as every other keying has it)."""
    if not record.assets or key is None:
        return False
    text = key.decode("utf-8", "replace")
    return text != record.assets[0] and text != record.id


@dataclass(slots=True)
class WindowStats:
    window_s: int
    start: int  # epoch seconds, a multiple of window_s
    classified: int = 0
    positive: int = 0
    skipped: int = 0
    sum_p_positive: float = 0.0
    asset: str | None = None  # None: the all-assets series

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


Attribution = Literal["primary", "every"]

# Distinct unpinned tickers counted per ranking period; a name first seen past this waits for the
# next period. The asset map has ~90 tickers: this only bounds what a misbehaving producer costs.
MAX_RANKED_PER_PERIOD = 1024


@dataclass(frozen=True, slots=True)
class AssetScope:
    """Which assets get a series of their own.

    `pinned` always do. Up to `top_n` others do, chosen by volume: an asset takes a free slot
    with its first classified record; once the slots are full, every period of the longest window
    length re-ranks them by the classified records each asset had in that period (ties keep the
    incumbent, then go by ticker), so an asset leaves only when `top_n` others out-mention it.
    `attribution`: a record counts for its primary asset only, or for every asset it names.
    """

    pinned: tuple[str, ...] = ()
    top_n: int = 0
    attribution: Attribution = "primary"

    def attributed(self, assets: Sequence[str]) -> Sequence[str]:
        return assets[:1] if self.attribution == "primary" else list(dict.fromkeys(assets))


@dataclass(slots=True)
class _Series:
    """The tumbling windows of every length for one key: all assets, or one asset."""

    windows_s: tuple[int, ...]
    asset: str | None = None
    open: dict[int, dict[int, WindowStats]] = field(default_factory=dict)
    # End of the last closed window per length: every window ending at or before it is final.
    frontier: dict[int, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.open = {w: {} for w in self.windows_s}
        self.frontier = dict.fromkeys(self.windows_s)

    def add(self, obs: Observation, wm: float | None) -> list[int]:
        dropped = []
        for w in self.windows_s:
            start = window_start(obs.event_time, w)
            # Per record, not per batch: a window past the watermark is closed whether or not
            # `close_ready` has run yet, so the outcome does not depend on batch boundaries.
            if wm is not None and start + w <= wm:
                dropped.append(w)
                continue
            opened = self.open[w]
            stats = opened.get(start)
            if stats is None:
                stats = opened[start] = WindowStats(w, start, asset=self.asset)
            stats.add(obs)
        return dropped

    def close(self, wm: float, max_gap_windows: int) -> list[WindowStats]:
        closed: list[WindowStats] = []
        for w in self.windows_s:
            opened = self.open[w]
            frontier = self.frontier[w]
            if frontier is None:
                if not opened:
                    continue
                frontier = min(opened)
            last_end = window_start(wm, w)
            if last_end <= frontier:
                continue
            count = (last_end - frontier) // w
            if count <= max_gap_windows:
                starts: Iterable[int] = range(frontier, last_end, w)
            else:
                recent = range(last_end - max_gap_windows * w, last_end, w)
                starts = sorted({s for s in opened if s < last_end} | set(recent))
            closed.extend(
                opened.pop(s) if s in opened else WindowStats(w, s, asset=self.asset)
                for s in starts
            )
            self.frontier[w] = last_end
        return closed


class SentimentIndex:
    """Tumbling windows of every configured length, for all assets and for each tracked asset
    (`assets`), closed by one shared watermark."""

    def __init__(
        self,
        windows_s: Sequence[int],
        allowed_lateness_s: float,
        *,
        max_gap_windows: int = 100,
        assets: AssetScope | None = None,
    ) -> None:
        if not windows_s or any(w <= 0 for w in windows_s):
            raise ValueError("windows_s needs at least one positive length")
        self.windows_s = tuple(sorted(set(windows_s)))
        self.watermark = Watermark(allowed_lateness_s)
        # A silent gap (or a jump in event time) yields empty windows, which matter to the
        # trailing volume mean; only the last max_gap_windows of them are emitted because the
        # rules never look further back than that.
        self.max_gap_windows = max_gap_windows
        self.scope = assets or AssetScope()
        self._all = _Series(self.windows_s)
        self._pinned = frozenset(self.scope.pinned)
        self._series: dict[str, _Series] = {a: _Series(self.windows_s, a) for a in self._pinned}
        self._dynamic: set[str] = set()
        self._rank_s = self.windows_s[-1]
        self._rank: dict[int, dict[str, int]] = {}
        self.dropped_late: dict[int, int] = dict.fromkeys(self.windows_s, 0)

    @property
    def assets(self) -> list[str]:
        """The tickers with a series now."""
        return sorted(self._series)

    def add(self, obs: Observation, source: Hashable = 0) -> list[int]:
        """Count a record; returns the window lengths for which it came too late (dropped)."""
        wm = self.watermark.value
        dropped = self._all.add(obs, wm)
        for w in dropped:
            self.dropped_late[w] += 1
        if obs.assets and (self._series or self.scope.top_n):
            for asset in self.scope.attributed(obs.assets):
                self._add_asset(asset, obs, wm)
        self.watermark.observe(source, obs.event_time)
        return dropped

    def _add_asset(self, asset: str, obs: Observation, wm: float | None) -> None:
        series = self._series.get(asset)
        dynamic = asset not in self._pinned
        if series is None and dynamic and obs.classified and len(self._dynamic) < self.scope.top_n:
            series = self._admit(asset)
        if series is not None:
            series.add(obs, wm)
        if not (dynamic and obs.classified and self.scope.top_n):
            return
        period = window_start(obs.event_time, self._rank_s)
        if wm is not None and period + self._rank_s <= wm:
            return
        counts = self._rank.setdefault(period, {})
        if asset in counts or len(counts) < MAX_RANKED_PER_PERIOD:
            counts[asset] = counts.get(asset, 0) + 1

    def _admit(self, asset: str) -> _Series:
        self._dynamic.add(asset)
        series = self._series[asset] = _Series(self.windows_s, asset)
        return series

    def _rerank(self, counts: dict[str, int]) -> None:
        incumbents = self._dynamic
        ranked = sorted(
            set(counts) | incumbents,
            key=lambda a: (-counts.get(a, 0), a not in incumbents, a),
        )
        keep = set(ranked[: self.scope.top_n])
        for asset in incumbents - keep:
            # Its open windows go with it: an asset that is no longer tracked is not judged.
            del self._series[asset]
        for asset in sorted(keep - incumbents):
            self._series[asset] = _Series(self.windows_s, asset)
        self._dynamic = keep

    def expect(self, sources: Iterable[Hashable]) -> None:
        self.watermark.expect(sources)

    def idle(self, source: Hashable) -> None:
        self.watermark.idle(source)

    def close_ready(self) -> list[WindowStats]:
        """Every window whose end the watermark has passed, oldest end first (all assets before
        the assets at the same end, then by ticker). Then the ranking periods the watermark
        passed re-rank the top-N assets: what closed here is judged before an asset leaves."""
        wm = self.watermark.value
        if wm is None:
            return []
        closed = self._all.close(wm, self.max_gap_windows)
        for asset in sorted(self._series):
            closed.extend(self._series[asset].close(wm, self.max_gap_windows))
        closed.sort(key=lambda s: (s.end, s.window_s, s.asset is not None, s.asset or ""))
        for period in sorted(p for p in self._rank if p + self._rank_s <= wm):
            self._rerank(self._rank.pop(period))
        return closed

    def open_windows(self, asset: str | None = None) -> list[WindowStats]:
        series = self._all if asset is None else self._series.get(asset)
        if series is None:
            return []
        return sorted(
            (s for opened in series.open.values() for s in opened.values()),
            key=lambda s: (s.start, s.window_s),
        )
