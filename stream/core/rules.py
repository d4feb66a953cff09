"""The rules that turn a closed window into an alert, the alert's deterministic id, and the
bounded memory of ids already published. Pure: no Kafka, no clock, no I/O.

Each series of `stream.core.windows.SentimentIndex` (all assets, each tracked asset) has its own
rule state per window length; an asset's rules are the all-assets settings with the overrides of
`alerts.assets.rules` ("*", then the ticker's own entry) on top.
"""

from __future__ import annotations

import hashlib
import heapq
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum

from ops.settings import AlertsSettings, AssetRuleOverrides
from schemas.alerts import Alert, AlertDirection, AlertKind
from stream.core.windows import WindowStats


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
    def from_settings(cls, s: AlertsSettings, asset: str | None = None) -> RuleConfig:
        """The all-assets rules (asset None), or one asset's with its overrides applied."""
        base = cls(
            threshold_high=s.bullish_threshold_high,
            threshold_low=s.bullish_threshold_low,
            zscore_k=s.zscore_k,
            zscore_min_std=s.zscore_min_std,
            trailing_windows=s.trailing_windows,
            min_trailing_windows=s.min_trailing_windows,
            volume_spike_factor=s.volume_spike_factor,
            min_volume=s.min_volume,
        )
        if asset is None:
            return base
        for key in ("*", asset):
            own = s.assets.rules.get(key)
            if own is not None:
                base = base._with(own)
        return base

    def _with(self, o: AssetRuleOverrides) -> RuleConfig:
        changes: dict[str, float | int] = {}
        if o.bullish_threshold_high is not None:
            changes["threshold_high"] = o.bullish_threshold_high
        if o.bullish_threshold_low is not None:
            changes["threshold_low"] = o.bullish_threshold_low
        if o.zscore_k is not None:
            changes["zscore_k"] = o.zscore_k
        if o.volume_spike_factor is not None:
            changes["volume_spike_factor"] = o.volume_spike_factor
        if o.min_volume is not None:
            changes["min_volume"] = o.min_volume
        return replace(self, **changes)  # type: ignore[arg-type]


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
    """Evaluates each closed window once, in order, per series (asset) and window length.

    Every rule is edge-triggered: it fires on the window where its condition becomes true and
    stays quiet while it remains true, so a market that stays bullish for an hour produces one
    threshold alert, not sixty. For the threshold rule "previous" is the previous qualifying
    window; with no previous window there is no crossing.

    `config` judges the all-assets windows; `asset_configs` an asset's (by ticker, "*" for the
    rest; `config` when neither is there).
    """

    config: RuleConfig
    asset_configs: dict[str, RuleConfig] = field(default_factory=dict)
    _history: dict[tuple[str | None, int], _History] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, s: AlertsSettings) -> AlertRules:
        keys = set(s.assets.rules) | {"*"}
        return cls(
            RuleConfig.from_settings(s),
            {k: RuleConfig.from_settings(s, k) for k in sorted(keys)},
        )

    def config_for(self, asset: str | None) -> RuleConfig:
        if asset is None:
            return self.config
        found = self.asset_configs.get(asset) or self.asset_configs.get("*")
        return found if found is not None else self.config

    def retain(self, assets: Iterable[str]) -> None:
        """Forget the rule state of assets no longer tracked (bounded memory; an asset that
        comes back starts afresh, as its windows do)."""
        keep = set(assets)
        for key in [k for k in self._history if k[0] is not None and k[0] not in keep]:
            del self._history[key]

    def _state(self, asset: str | None, window_s: int, cfg: RuleConfig) -> _History:
        state = self._history.get((asset, window_s))
        if state is None:
            n = cfg.trailing_windows
            state = self._history[(asset, window_s)] = _History(deque(maxlen=n), deque(maxlen=n))
        return state

    def evaluate(self, window: WindowStats) -> list[Decision]:
        cfg = self.config_for(window.asset)
        state = self._state(window.asset, window.window_s, cfg)
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


def alert_id(kind: AlertKind, window_s: int, window_start_s: int, asset: str | None = None) -> str:
    """Deterministic: the same window, rule and asset give the same id in every run and on every
    host. The all-assets id hashes what it hashed before per-asset indexes existed, so ids
    already on an alerts topic keep matching; an asset's id prefixes the ticker (one more field,
    so it can never equal an all-assets id)."""
    raw = f"{kind.value}:{window_s}:{window_start_s}"
    if asset is not None:
        raw = f"{asset}:{raw}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def describe(decision: Decision) -> str:
    w = decision.window
    where = f"{w.window_s}s window {_utc(w.start):%Y-%m-%d %H:%M:%S}Z"
    what = "" if w.asset is None else f"{w.asset}: "
    return what + _describe(decision, where)


def _describe(decision: Decision, where: str) -> str:
    w = decision.window
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
        alert_id=alert_id(decision.kind, w.window_s, w.start, w.asset),
        asset=w.asset,
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


class SeenAlerts:
    """Alert ids already on the alerts topic, each kept only while its window could still close.

    An index closes each window once, in end order, so an id can only be derived again while its
    window is open; once the watermark is `horizon_s` past the window's end the id is forgotten.
    The horizon is a safety margin (one window length of the longest series is enough), not a
    correctness bound. Memory is bounded by the alerts whose windows end within the horizon.
    """

    def __init__(self, horizon_s: float) -> None:
        if horizon_s < 0:
            raise ValueError("horizon_s must be >= 0")
        self.horizon_s = horizon_s
        self._end: dict[str, float] = {}
        self._by_end: list[tuple[float, str]] = []  # a heap; stale entries are skipped

    def add(self, alert_id: str, window_end: float) -> None:
        known = self._end.get(alert_id)
        if known is not None and known >= window_end:
            return
        self._end[alert_id] = window_end
        heapq.heappush(self._by_end, (window_end, alert_id))

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._end

    def __len__(self) -> int:
        return len(self._end)

    def forget_before(self, watermark: float) -> int:
        """Forget ids whose window ended more than `horizon_s` before `watermark`; returns how
        many were forgotten."""
        limit = watermark - self.horizon_s
        forgotten = 0
        while self._by_end and self._by_end[0][0] < limit:
            end, alert_id = heapq.heappop(self._by_end)
            if self._end.get(alert_id) == end:
                del self._end[alert_id]
                forgotten += 1
        return forgotten
