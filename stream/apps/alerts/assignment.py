"""One assignment of `cryptosent alerts`: the index and rules rebuilt from the look-back, the
silent replay up to the group's committed offsets, and the live records held back meanwhile
(guard 1 in `stream.apps.alerts.service`). A rebalance starts a fresh `Assignment`, so nothing
of the previous one can leak into the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from confluent_kafka import Message
from pydantic import ValidationError

from ops.kafka.readback import before_cutoff, is_partition_eof
from ops.logging import get_logger
from ops.settings import AlertsSettings
from schemas.messages import SentimentOut
from stream.apps.alerts.metrics import ALL_ASSETS, AlertsMetrics, AlertsStats
from stream.apps.alerts.publisher import AlertPublisher
from stream.core.rules import AlertRules, build_alert
from stream.core.windows import (
    AssetScope,
    Observation,
    SentimentIndex,
    WindowStats,
    is_fanout_copy,
)

log = get_logger(__name__)

# A partition that delivered nothing for this long counts as idle even without an end-of-
# partition event, so one silent partition cannot stall the watermark for good.
IDLE_AFTER_S = 5.0

PartitionsFn = Callable[[list[int]], None]


class Assignment:
    def __init__(
        self,
        cfg: AlertsSettings,
        partitions: Iterable[int],
        replay_end: dict[int, int],
        cutoff_ms: int,
        *,
        publisher: AlertPublisher,
        stats: AlertsStats,
        metrics: AlertsMetrics,
        pause: PartitionsFn,
        resume: PartitionsFn,
        clock: Callable[[], float] = time.time,
        on_window: Callable[[WindowStats], None] | None = None,
    ) -> None:
        self.partitions = sorted(partitions)
        scope = AssetScope(tuple(cfg.assets.tickers), cfg.assets.top_n, cfg.assets.attribution)
        self.index = SentimentIndex(cfg.windows_s, cfg.allowed_lateness_s, assets=scope)
        self.index.expect(self.partitions)
        self.rules = AlertRules.from_settings(cfg)
        self._tracked = set(self.index.assets)
        self.cutoff_ms = cutoff_ms
        self.publisher = publisher
        self.stats = stats
        self.metrics = metrics
        self._pause_fn = pause
        self._resume_fn = resume
        self._clock = clock
        self.on_window = on_window
        # Next offset to commit per partition.
        self.positions: dict[int, int] = {}
        # Partitions done with the look-back: they reported their end, reached their committed
        # offset, or stayed silent for IDLE_AFTER_S (a resumed partition may not report its end
        # again).
        self.caught_up: set[int] = set()
        self._replay_end = dict(replay_end)
        self._held: list[Message] = []
        self._paused: set[int] = set()
        self._deferred_idle: set[int] = set()
        self._last_activity = dict.fromkeys(self.partitions, time.monotonic())
        stats.replaying = bool(self._replay_end)

    @property
    def behind(self) -> list[int]:
        return [p for p in self.partitions if p not in self.caught_up]

    # -- records ------------------------------------------------------------------------------

    def receive(self, msg: Message) -> None:
        err = msg.error()
        partition = msg.partition()
        if partition is None:
            log.warning("alerts_consumer_error", error=str(err))
            return
        if partition in self._last_activity:
            self._last_activity[partition] = time.monotonic()
        if err is not None:
            if is_partition_eof(err):
                self.caught_up.add(partition)
                self._went_quiet(partition)
                if partition in self._replay_end:
                    self._replay_done(partition)
                return
            log.warning("alerts_consumer_error", error=str(err))
            return
        if self.stats.replaying and partition not in self._replay_end:
            # This partition is past its committed offset; hold its records until every other
            # partition is too, or they would move the watermark during the replay.
            self._hold(msg)
            self._pause(partition)
            return
        end = self._replay_end.get(partition)
        offset = msg.offset() or 0
        if end is not None and offset >= end:
            # A gap (transaction markers) jumped over the committed offset: this one is live.
            self._replay_done(partition)
            if self.stats.replaying:
                self._hold(msg)
                return
        self._process(msg)
        if end is not None and offset + 1 >= end:
            self._replay_done(partition)

    def _hold(self, msg: Message) -> None:
        self._held.append(msg)
        self.stats.held_during_replay += 1

    def _process(self, msg: Message) -> None:
        # Records (not events) always carry both.
        partition = msg.partition() or 0
        offset = msg.offset() or 0
        self.positions[partition] = offset + 1
        self.stats.consumed += 1
        if before_cutoff(msg, self.cutoff_ms):
            self.stats.before_lookback += 1
            self.metrics.records.labels("before_lookback").inc()
            return
        try:
            record = SentimentOut.model_validate_json(msg.value() or b"")
        except (ValidationError, ValueError) as exc:
            self.stats.invalid += 1
            self.metrics.records.labels("invalid").inc()
            log.warning(
                "alerts_invalid_record",
                partition=partition,
                offset=offset,
                error=str(exc).splitlines()[0],
            )
            return
        if is_fanout_copy(msg.key(), record):
            self.stats.fanout_copies += 1
            self.metrics.records.labels("fanout_copy").inc()
            return
        dropped = self.index.add(Observation.from_record(record), partition)
        if dropped:
            self.stats.dropped_late += 1
            self.metrics.records.labels("late").inc()
            for w in dropped:
                self.metrics.late.labels(str(w)).inc()
            log.debug(
                "alerts_late_record",
                id=record.id,
                event_time=str(record.event_time),
                windows_s=dropped,
                watermark=self.index.watermark.value,
            )
        else:
            self.stats.counted += 1
            self.metrics.records.labels("counted").inc()

    # -- the replay and idle partitions -------------------------------------------------------

    def _went_quiet(self, partition: int) -> None:
        """Mark a partition idle, unless that could move the watermark too far.

        Not while its live records are held back (they have yet to be counted), and, during the
        replay, not once it delivered records (guard 1): both wait for the end of the replay.
        """
        held = any(m.partition() == partition for m in self._held)
        if self.stats.replaying and (held or self.index.watermark.seen(partition)):
            self._deferred_idle.add(partition)
        elif not held:
            self.index.idle(partition)

    def _pause(self, partition: int) -> None:
        if partition not in self._paused:
            self._pause_fn([partition])
            self._paused.add(partition)

    def _replay_done(self, partition: int) -> None:
        if self._replay_end.pop(partition, None) is None:
            return
        self.caught_up.add(partition)
        if self._replay_end:
            self._pause(partition)
            return
        # Every partition reached its committed offset. What can close now, the previous run
        # closed too (it had read the same records), so it is judged silently before alerts go
        # live.
        self.close_windows()
        self.stats.replaying = False
        deferred, self._deferred_idle = self._deferred_idle, set()
        for quiet in sorted(deferred):
            self._went_quiet(quiet)
        log.info(
            "alerts_replay_done",
            suppressed=self.stats.suppressed_replay,
            watermark=self.index.watermark.value,
        )
        if self._paused:
            self._resume_fn(sorted(self._paused))
            self._paused.clear()
        held, self._held = self._held, []
        for msg in held:
            self._process(msg)

    def after_batch(self) -> None:
        quiet_since = time.monotonic() - IDLE_AFTER_S
        for partition, seen in self._last_activity.items():
            if seen < quiet_since and partition not in self._paused:
                self.caught_up.add(partition)
                self._went_quiet(partition)
                self._last_activity[partition] = float("inf")
        self.close_windows()

    # -- windows and alerts -------------------------------------------------------------------

    def close_windows(self) -> None:
        wm = self.index.watermark.value
        self.stats.watermark = wm
        if wm is None:
            return
        self.metrics.watermark.set(wm)
        closed = self.index.close_ready()
        if closed:
            now = datetime.fromtimestamp(self._clock(), tz=UTC)
            for window in closed:
                self.stats.windows_closed += 1
                label = str(window.window_s)
                asset = window.asset or ALL_ASSETS
                if window.asset is not None:
                    # Even one admitted and re-ranked out within this call: its gauges go too.
                    self._tracked.add(window.asset)
                self.metrics.windows.labels(label).inc()
                ratio = window.bullish_ratio
                self.metrics.ratio.labels(label, asset).set(
                    float("nan") if ratio is None else ratio
                )
                self.metrics.volume.labels(label, asset).set(window.volume)
                if self.on_window is not None:
                    self.on_window(window)
                for decision in self.rules.evaluate(window):
                    alert = build_alert(decision, now)
                    self.publisher.emit(alert, replaying=self.stats.replaying)
            self.stats.dropped_late = sum(self.index.dropped_late.values())
            self._track_assets()
        self.publisher.forget_before(wm)

    def _track_assets(self) -> None:
        """After a re-ranking: drop what the assets that left the top N kept (rule state and
        gauges), so neither grows with the number of assets ever seen."""
        tracked = set(self.index.assets)
        left = self._tracked - tracked
        if left:
            self.rules.retain(tracked)
            self.metrics.forget_assets(left, self.index.windows_s)
        if tracked != self._tracked:
            log.info("alerts_assets_tracked", assets=sorted(tracked), left=sorted(left))
        self._tracked = tracked
        self.stats.assets = sorted(tracked)
