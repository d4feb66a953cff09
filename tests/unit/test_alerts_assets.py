"""Per-asset indexes and rules of `cryptosent alerts` (issue 12), without a broker: which assets
get a series, how records are attributed, the bounded top-N, per-asset rule overrides and ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from ops.settings import AlertsSettings, Settings
from schemas.alerts import AlertKind
from schemas.messages import Label, SentimentOut, SourceRef, Status
from stream.apps.alerts.assignment import Assignment
from stream.apps.alerts.metrics import AlertsMetrics, AlertsStats
from stream.core.rules import AlertRules, RuleConfig, alert_id, build_alert
from stream.core.windows import AssetScope, Observation, SentimentIndex, WindowStats
from tests.unit.test_alerts_shell import Calls, FakeProducer, Msg, publisher

T0 = 1_767_225_600
NOW = datetime(2026, 1, 1, tzinfo=UTC)
# alert_id(ZSCORE, 60, T0) before per-asset ids existed: all-assets ids must not change.
PINNED_ZSCORE_60_T0 = "45ffd09a95ecd56bba0361f400caf7c7"


def obs(t: float, *assets: str, positive: bool = True) -> Observation:
    return Observation(t, True, positive, 0.9 if positive else 0.1, assets)


def by_key(closed: list[WindowStats]) -> dict[tuple[str | None, int], tuple[int, int]]:
    return {(w.asset, w.start): (w.classified, w.positive) for w in closed}


# -- which assets get a series ----------------------------------------------------------------


def test_pinned_asset_has_its_own_series_beside_all_assets() -> None:
    index = SentimentIndex([60], 0, assets=AssetScope(pinned=("ETH",)))
    index.add(obs(T0 + 1, "ETH"))
    index.add(obs(T0 + 2, "BTC", positive=False))
    index.add(obs(T0 + 3))  # names no asset
    index.add(obs(T0 + 61, "ETH"))
    assert index.assets == ["ETH"]
    assert by_key(index.close_ready()) == {(None, T0): (3, 2), ("ETH", T0): (1, 1)}


def test_primary_attribution_counts_the_first_asset_only_every_counts_all() -> None:
    for attribution, expected in (("primary", {"ETH"}), ("every", {"ETH", "BTC"})):
        scope = AssetScope(pinned=("ETH", "BTC"), attribution=attribution)  # type: ignore[arg-type]
        index = SentimentIndex([60], 0, assets=scope)
        index.add(obs(T0 + 1, "ETH", "BTC", "ETH"))
        index.add(obs(T0 + 61))
        counted = {w.asset for w in index.close_ready() if w.asset and w.classified}
        assert counted == expected


def test_top_n_takes_free_slots_then_reranks_by_volume_each_longest_window() -> None:
    index = SentimentIndex([60, 300], 0, assets=AssetScope(top_n=2))
    # Period [T0, T0+300): SOL once, then DOGE 3x and XRP 5x. SOL and DOGE take the free slots.
    index.add(obs(T0 + 1, "SOL"))
    for i in range(3):
        index.add(obs(T0 + 10 + i, "DOGE"))
    for i in range(5):
        index.add(obs(T0 + 20 + i, "XRP"))
    assert index.assets == ["DOGE", "SOL"]
    index.add(obs(T0 + 299))
    index.close_ready()
    assert index.assets == ["DOGE", "SOL"]  # the period has not ended
    index.add(obs(T0 + 300))
    closed = index.close_ready()
    # SOL's windows up to the period's end are judged before it leaves; XRP comes in.
    assert ("SOL", T0) in by_key(closed)
    assert index.assets == ["DOGE", "XRP"]
    assert index.open_windows("SOL") == []
    # A tie keeps the incumbents: SOL as often as DOGE and XRP in the next period stays out.
    for i in range(2):
        for asset in ("SOL", "DOGE", "XRP"):
            index.add(obs(T0 + 301 + i, asset))
    index.add(obs(T0 + 600))
    index.close_ready()
    assert index.assets == ["DOGE", "XRP"]
    # Out-mentioned, an incumbent leaves.
    for i in range(3):
        index.add(obs(T0 + 601 + i, "SOL"))
    index.add(obs(T0 + 620, "XRP"))
    index.add(obs(T0 + 900))
    index.close_ready()
    assert index.assets == ["SOL", "XRP"]


def test_pinned_assets_do_not_take_top_n_slots() -> None:
    index = SentimentIndex([60], 0, assets=AssetScope(pinned=("BTC",), top_n=1))
    index.add(obs(T0 + 1, "BTC"))
    index.add(obs(T0 + 2, "ETH"))
    index.add(obs(T0 + 3, "SOL"))
    assert index.assets == ["BTC", "ETH"]


def test_a_record_late_for_all_assets_is_late_for_its_asset() -> None:
    index = SentimentIndex([60], 0, assets=AssetScope(pinned=("ETH",)))
    index.add(obs(T0 + 10, "ETH"))
    index.add(obs(T0 + 130, "ETH"))
    index.close_ready()
    assert index.add(obs(T0 + 30, "ETH")) == [60]
    assert [(w.start, w.classified) for w in index.open_windows("ETH")] == [(T0 + 120, 1)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3000), st.lists(st.sampled_from("ABCDEFGHIJ"), max_size=3)),
        max_size=300,
    ),
    st.integers(0, 4),
)
def test_tracked_assets_stay_bounded_and_per_asset_counts_add_up(
    events: list[tuple[int, list[str]]], top_n: int
) -> None:
    index = SentimentIndex([60, 300], 0, max_gap_windows=10_000, assets=AssetScope(("A",), top_n))
    closed: list[WindowStats] = []
    for t, assets in sorted(events):
        index.add(obs(T0 + t, *assets))
        closed += index.close_ready()
        assert len(index.assets) <= 1 + top_n
        assert "A" in index.assets
    # Pinned A is never evicted: its 60 s windows hold exactly the records whose primary is A.
    index.add(obs(T0 + 10_000))
    closed += index.close_ready()
    got = sum(w.classified for w in closed if w.asset == "A" and w.window_s == 60)
    assert got == sum(1 for _, assets in events if assets[:1] == ["A"])


# -- rules and ids ----------------------------------------------------------------------------


def test_all_assets_ids_are_unchanged_and_asset_ids_differ() -> None:
    assert alert_id(AlertKind.ZSCORE, 60, T0) == PINNED_ZSCORE_60_T0
    assert alert_id(AlertKind.ZSCORE, 60, T0, None) == PINNED_ZSCORE_60_T0
    ids = {alert_id(AlertKind.ZSCORE, 60, T0, a) for a in (None, "ETH", "BTC")}
    assert len(ids) == 3
    assert alert_id(AlertKind.ZSCORE, 60, T0, "ETH") == alert_id(AlertKind.ZSCORE, 60, T0, "ETH")


def test_asset_overrides_apply_star_then_ticker() -> None:
    s = AlertsSettings(
        min_volume=50,
        assets={"rules": {"*": {"min_volume": 5}, "eth": {"bullish_threshold_high": 0.9}}},
    )
    rules = AlertRules.from_settings(s)
    assert rules.config_for(None).min_volume == 50
    assert rules.config_for("BTC") == RuleConfig.from_settings(s, "BTC")
    assert (rules.config_for("BTC").min_volume, rules.config_for("BTC").threshold_high) == (5, 0.7)
    assert (rules.config_for("ETH").min_volume, rules.config_for("ETH").threshold_high) == (5, 0.9)


def test_asset_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        AlertsSettings(assets={"tickers": ["A", "B"], "top_n": 199})
    with pytest.raises(ValueError, match=r"rules\[ETH\]"):
        AlertsSettings(assets={"rules": {"ETH": {"bullish_threshold_low": 0.8}}})
    s = Settings(_env_file=None, alerts={"assets": {"tickers": "btc, eth,BTC"}})
    assert s.alerts.assets.tickers == ["BTC", "ETH"]


def window(asset: str | None, i: int, classified: int, positive: int) -> WindowStats:
    return WindowStats(60, T0 + 60 * i, classified, positive, 0, 0.5 * classified, asset)


def test_each_asset_has_its_own_rule_state() -> None:
    rules = AlertRules(RuleConfig(min_volume=5, zscore_k=50, volume_spike_factor=50))
    fired = []
    for i, (eth, btc) in enumerate([(5, 5), (5, 5), (9, 5), (9, 5)]):
        for w in (window("ETH", i, 10, eth), window("BTC", i, 10, btc), window(None, i, 20, 10)):
            fired += [(w.asset, i, d.kind.value) for d in rules.evaluate(w)]
    assert fired == [("ETH", 2, "threshold_crossed")]
    [decision] = rules.evaluate(window("BTC", 4, 10, 9))
    alert = build_alert(decision, NOW)
    assert alert.asset == "BTC"
    assert alert.alert_id == alert_id(AlertKind.THRESHOLD_CROSSED, 60, T0 + 240, "BTC")
    assert alert.message.startswith("BTC: bullish ratio 0.90 crossed above 0.70")
    rules.retain(["ETH"])
    # BTC starts afresh: its first window has no previous side, so no crossing.
    assert rules.evaluate(window("BTC", 5, 10, 1)) == []


# -- the shell ---------------------------------------------------------------------------------


def out(off: int, t: float, positive: bool, *assets: str, key: str | None = None) -> Msg:
    rec = SentimentOut(
        id=f"r{off}",
        status=Status.CLASSIFIED,
        label=Label.POSITIVE if positive else Label.NEGATIVE,
        p_positive=0.9 if positive else 0.1,
        p_negative=0.1 if positive else 0.9,
        model_version="m",
        source=SourceRef(topic="in", partition=0, offset=off),
        event_time=datetime.fromtimestamp(t, tz=UTC),
        processed_time=NOW,
        assets=list(assets),
    )
    return Msg(0, off, rec.model_dump_json().encode(), k=(key or rec.id).encode())


def test_assignment_publishes_per_asset_alerts_and_drops_what_left_the_top_n() -> None:
    cfg = AlertsSettings(
        windows_s=[60],
        allowed_lateness_s=0,
        min_volume=3,
        zscore_k=50,
        volume_spike_factor=50,
        assets={"top_n": 1},
    )
    stats, producer = AlertsStats(), FakeProducer()
    metrics = AlertsMetrics(CollectorRegistry())
    a = Assignment(
        cfg,
        [0],
        {},
        cutoff_ms=0,
        publisher=publisher(stats, producer),
        stats=stats,
        metrics=metrics,
        pause=Calls().paused.append,
        resume=Calls().resumed.append,
        clock=lambda: T0 + 3600.0,
    )
    offsets = iter(range(1000))
    # ETH neutral for two windows then bullish; BTC neutral throughout. All-assets goes from
    # 0.5 to 0.7: a crossing of its own.
    for w, eth_pos in enumerate([2, 2, 4]):
        for i in range(4):
            a.receive(out(next(offsets), T0 + 60 * w + i, i < eth_pos, "ETH"))
            a.receive(out(next(offsets), T0 + 60 * w + 10 + i, i < 2, "BTC"))
    a.receive(out(next(offsets), T0 + 180, False))
    a.after_batch()
    assert stats.assets == ["ETH"]  # top_n=1: ETH came first
    fired = [(r.asset, r.window_start.timestamp()) for r in alerts_of(producer)]
    assert fired == [(None, T0 + 120), ("ETH", T0 + 120)]  # all assets first at the same end
    assert metrics.volume.labels("60", "ETH")._value.get() == 4
    # Next window: only BTC; the 60 s period end re-ranks, BTC takes ETH's slot.
    for i in range(6):
        a.receive(out(next(offsets), T0 + 181 + i, True, "BTC"))
    a.receive(out(next(offsets), T0 + 240, False))
    a.after_batch()
    assert stats.assets == ["BTC"]
    assert ("60", "ETH") not in {
        (s.labels["window_s"], s.labels["asset"])
        for m in metrics.volume.collect()
        for s in m.samples
    }
    assert "ETH" not in {asset for asset, _ in a.rules._history}


def test_fanned_out_copies_count_once() -> None:
    cfg = AlertsSettings(windows_s=[60], allowed_lateness_s=0, assets={"tickers": ["BTC"]})
    stats = AlertsStats()
    a = Assignment(
        cfg,
        [0],
        {},
        cutoff_ms=0,
        publisher=publisher(stats),
        stats=stats,
        metrics=AlertsMetrics(CollectorRegistry()),
        pause=Calls().paused.append,
        resume=Calls().resumed.append,
    )
    # asset_fanout: one value, keyed ETH then BTC; primary_asset / tweet_id keys count too.
    a.receive(out(0, T0 + 1, True, "ETH", "BTC", key="ETH"))
    a.receive(out(1, T0 + 1, True, "ETH", "BTC", key="BTC"))
    a.receive(out(2, T0 + 2, True, "BTC", "ETH", key="BTC"))
    a.receive(out(3, T0 + 3, True, "BTC"))
    a.receive(out(4, T0 + 61, True))
    assert (stats.counted, stats.fanout_copies) == (4, 1)
    closed: list[WindowStats] = []
    a.on_window = closed.append
    a.close_windows()
    assert [(w.asset, w.classified) for w in closed] == [(None, 3), ("BTC", 2), ("ETH", 1)]


def alerts_of(producer: FakeProducer) -> list[Any]:
    from schemas.alerts import Alert

    producer.poll()
    return [Alert.model_validate_json(v) for _, _, v in producer.sent]
