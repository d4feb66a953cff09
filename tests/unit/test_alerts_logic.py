"""The window and rule logic of `cryptosent alerts`, without a broker."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alerts import AlertDirection, AlertKind
from schemas.messages import Label, SentimentOut, SkipReason, SourceRef, Status
from stream.core.rules import AlertRules, RuleConfig, SeenAlerts, alert_id, build_alert
from stream.core.windows import Observation, SentimentIndex, Watermark, WindowStats, window_start

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a multiple of 60 and 900
PINNED_ZSCORE_60_T0 = "45ffd09a95ecd56bba0361f400caf7c7"


def obs(t: float, positive: bool | None = True, p: float = 0.9) -> Observation:
    if positive is None:
        return Observation(event_time=t, classified=False)
    return Observation(event_time=t, classified=True, positive=positive, p_positive=p)


def window(start: int, classified: int, positive: int, window_s: int = 60) -> WindowStats:
    return WindowStats(window_s, start, classified, positive, 0, 0.5 * classified)


# -- windows and the watermark ---------------------------------------------------------------


def test_window_start_is_aligned_to_the_epoch() -> None:
    assert window_start(T0 + 59.999, 60) == T0
    assert window_start(T0 + 60, 60) == T0 + 60
    assert window_start(T0 - 0.5, 60) == T0 - 60


def test_window_closes_when_watermark_passes_its_end() -> None:
    index = SentimentIndex([60], allowed_lateness_s=10)
    index.add(obs(T0 + 5))
    index.add(obs(T0 + 69))  # watermark T0 + 59: the first window is still open
    assert index.close_ready() == []
    index.add(obs(T0 + 70))  # watermark T0 + 60 = end of the first window
    [closed] = index.close_ready()
    assert (closed.start, closed.classified) == (T0, 1)


def test_out_of_order_record_within_lateness_lands_in_its_window() -> None:
    index = SentimentIndex([60], allowed_lateness_s=30)
    index.add(obs(T0 + 10))
    index.add(obs(T0 + 75))  # watermark T0 + 45
    assert index.add(obs(T0 + 50, positive=False)) == []  # older, but its window is open
    index.add(obs(T0 + 95))  # watermark T0 + 65 closes [T0, T0 + 60)
    [closed] = index.close_ready()
    assert (closed.start, closed.classified, closed.positive) == (T0, 2, 1)


def test_record_for_a_closed_window_is_dropped_late() -> None:
    index = SentimentIndex([60, 900], allowed_lateness_s=0)
    index.add(obs(T0 + 10))
    index.add(obs(T0 + 130))
    index.close_ready()
    # Late for the 60 s window, still on time for the 900 s one.
    assert index.add(obs(T0 + 30)) == [60]
    assert index.dropped_late == {60: 1, 900: 0}
    assert [w.classified for w in index.open_windows() if w.window_s == 900] == [3]


def test_lateness_does_not_depend_on_when_close_ready_runs() -> None:
    index = SentimentIndex([60], allowed_lateness_s=0)
    index.add(obs(T0 + 10))
    index.add(obs(T0 + 130))  # closes two windows, close_ready not called yet
    assert index.add(obs(T0 + 30)) == [60]


def test_gap_yields_empty_windows_and_is_capped() -> None:
    index = SentimentIndex([60], allowed_lateness_s=0, max_gap_windows=5)
    index.add(obs(T0 + 1))
    index.add(obs(T0 + 3 * 60 + 1))
    assert [(w.start - T0, w.classified) for w in index.close_ready()] == [
        (0, 1),
        (60, 0),
        (120, 0),
    ]
    index.add(obs(T0 + 1000 * 60 + 1))
    closed = index.close_ready()
    assert len(closed) == 6  # the open window at minute 3 plus the 5 most recent empty ones
    assert (closed[0].start, closed[0].classified) == (T0 + 180, 1)
    assert [w.start for w in closed[1:]] == [T0 + m * 60 for m in range(995, 1000)]


def test_watermark_waits_for_expected_sources_and_ignores_idle_ones() -> None:
    wm = Watermark(allowed_lateness_s=0)
    wm.expect([0, 1])
    wm.observe(0, 100)
    assert wm.value is None  # partition 1 has not reported yet
    wm.observe(1, 40)
    assert wm.value == 40  # the slowest active source bounds it
    wm.idle(1)
    assert wm.value == 100
    wm.observe(1, 50)  # active again, but the watermark never goes back
    assert wm.value == 100
    wm.idle(0)
    wm.idle(1)
    assert wm.value == 100


def test_catch_up_of_one_partition_does_not_make_the_other_late() -> None:
    index = SentimentIndex([60], allowed_lateness_s=0)
    index.expect([0, 1])
    for i in range(10):  # partition 0's backlog arrives first
        index.add(obs(T0 + i * 60 + 1), source=0)
    assert index.close_ready() == []
    for i in range(10):
        assert index.add(obs(T0 + i * 60 + 2), source=1) == []
    assert [w.classified for w in index.close_ready()] == [2] * 9


def test_observation_from_record_falls_back_to_processed_time() -> None:
    processed = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    rec = SentimentOut(
        id="1",
        status=Status.SKIPPED,
        skip_reason=SkipReason.NON_ENGLISH,
        model_version="m",
        source=SourceRef(topic="t", partition=0, offset=0),
        processed_time=processed,
    )
    o = Observation.from_record(rec)
    assert (o.event_time, o.classified) == (processed.timestamp(), False)
    rec2 = rec.model_copy(
        update={
            "status": Status.CLASSIFIED,
            "skip_reason": None,
            "label": Label.POSITIVE,
            "p_positive": 0.8,
            "p_negative": 0.2,
            "event_time": datetime(2026, 1, 1, tzinfo=UTC),
        }
    )
    o2 = Observation.from_record(rec2)
    assert (o2.event_time, o2.positive, o2.p_positive) == (T0, True, 0.8)


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.floats(min_value=0, max_value=3600), min_size=1, max_size=200),
    lateness=st.sampled_from([0.0, 5.0, 30.0, 120.0]),
    seed=st.integers(0, 1000),
)
def test_every_record_is_counted_once_or_dropped(
    times: list[float], lateness: float, seed: int
) -> None:
    """Conservation: each record is counted in exactly one window per length, or dropped; no
    window is emitted twice; the emitted windows of a length never overlap."""
    rng = random.Random(seed)
    index = SentimentIndex([60, 300], allowed_lateness_s=lateness, max_gap_windows=10_000)
    closed: list[WindowStats] = []
    for t in times:
        index.add(obs(T0 + t, positive=rng.random() < 0.5), source=rng.randrange(2))
        if rng.random() < 0.3:
            closed.extend(index.close_ready())
    closed.extend(index.close_ready())
    everything = closed + index.open_windows()
    for w in (60, 300):
        mine = [s for s in everything if s.window_s == w]
        assert sum(s.classified for s in mine) + index.dropped_late[w] == len(times)
        starts = [s.start for s in mine]
        assert len(starts) == len(set(starts))
        assert all(s % w == 0 for s in starts)
    # Windows are emitted in end order.
    assert [s.end for s in closed] == sorted(s.end for s in closed)


@settings(max_examples=40, deadline=None)
@given(
    times=st.lists(st.floats(min_value=0, max_value=1800), min_size=1, max_size=100),
    lateness=st.sampled_from([0.0, 10.0, 60.0]),
)
def test_in_order_stream_drops_nothing_and_result_is_batching_independent(
    times: list[float], lateness: float
) -> None:
    times = sorted(times)

    def run(close_every: int) -> list[tuple[int, int, int]]:
        index = SentimentIndex([60], allowed_lateness_s=lateness, max_gap_windows=10_000)
        out = []
        for i, t in enumerate(times):
            assert index.add(obs(T0 + t)) == []
            if i % close_every == 0:
                out += index.close_ready()
        out += index.close_ready()
        return [(w.window_s, w.start, w.classified) for w in out]

    assert run(1) == run(7) == run(10_000)


# -- rules -----------------------------------------------------------------------------------


CFG = RuleConfig(
    threshold_high=0.7,
    threshold_low=0.3,
    zscore_k=3.0,
    zscore_min_std=0.02,
    trailing_windows=10,
    min_trailing_windows=3,
    volume_spike_factor=3.0,
    min_volume=10,
)


def run_rules(windows: list[WindowStats], cfg: RuleConfig = CFG) -> list[tuple[int, str, str]]:
    rules = AlertRules(cfg)
    out = []
    for i, w in enumerate(windows):
        out += [(i, d.kind.value, d.direction.value) for d in rules.evaluate(w)]
    return out


def series(ratios_and_volumes: list[tuple[float, int]]) -> list[WindowStats]:
    return [
        window(T0 + i * 60, volume, round(ratio * volume))
        for i, (ratio, volume) in enumerate(ratios_and_volumes)
    ]


def test_flat_stream_fires_nothing() -> None:
    assert run_rules(series([(0.5, 20)] * 50)) == []


def test_threshold_crossing_fires_once_per_crossing() -> None:
    ratios = [0.5] * 3 + [0.8] * 5 + [0.5] * 2 + [0.8] * 2
    fired = [a for a in run_rules(series([(r, 20) for r in ratios])) if a[1] != "zscore"]
    assert fired == [(3, "threshold_crossed", "up"), (10, "threshold_crossed", "up")]


def test_threshold_crossing_down_and_first_window_has_no_crossing() -> None:
    fired = run_rules(series([(0.9, 20), (0.9, 20), (0.2, 20), (0.2, 20)]))
    assert [a for a in fired if a[1] == "threshold_crossed"] == [(2, "threshold_crossed", "down")]


def test_low_volume_windows_neither_fire_nor_reset_the_side() -> None:
    fired = run_rules(series([(0.5, 20), (0.9, 20), (1.0, 2), (0.9, 20)]))
    assert [a for a in fired if a[1] == "threshold_crossed"] == [(1, "threshold_crossed", "up")]


def test_zscore_fires_on_a_jump_and_not_while_it_persists() -> None:
    ratios = [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.65, 0.66]
    fired = run_rules(series([(r, 100) for r in ratios]))
    assert fired == [(6, "zscore", "up")]


def test_zscore_needs_history() -> None:
    assert run_rules(series([(0.5, 100), (0.5, 100), (0.68, 100)])) == []


def test_volume_spike_fires_once_and_counts_empty_windows() -> None:
    volumes = [20, 20, 20, 20, 100, 120, 20, 0, 0, 0, 0, 40]
    windows = [window(T0 + i * 60, v, v // 2) for i, v in enumerate(volumes)]
    fired = [a for a in run_rules(windows) if a[1] == "volume_spike"]
    # Window 5 is still spiking (no second alert); window 11's 40 is under 3x the trailing
    # mean of 30, which still holds the burst.
    assert fired == [(4, "volume_spike", "up")]


def test_volume_spike_after_silence() -> None:
    volumes = [12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 30]
    windows = [window(T0 + i * 60, v, v // 2) for i, v in enumerate(volumes)]
    assert [a for a in run_rules(windows) if a[1] == "volume_spike"] == [(11, "volume_spike", "up")]


@settings(max_examples=50, deadline=None)
@given(
    ratio=st.floats(min_value=0.31, max_value=0.69),
    volume=st.integers(min_value=1, max_value=500),
    n=st.integers(min_value=1, max_value=60),
)
def test_constant_windows_never_alert(ratio: float, volume: int, n: int) -> None:
    positive = round(ratio * volume)
    if not 0.3 < positive / volume < 0.7:
        return
    windows = [window(T0 + i * 60, volume, positive) for i in range(n)]
    assert run_rules(windows) == []


@settings(max_examples=50, deadline=None)
@given(ratios=st.lists(st.sampled_from([0.1, 0.5, 0.9]), min_size=1, max_size=60))
def test_threshold_alerts_alternate_and_match_side_changes(ratios: list[float]) -> None:
    fired = [a for a in run_rules(series([(r, 50) for r in ratios])) if a[1] != "zscore"]
    fired = [a for a in fired if a[1] == "threshold_crossed"]
    expected = [
        (i, "threshold_crossed", "up" if r == 0.9 else "down")
        for i, r in enumerate(ratios)
        if i > 0 and r != 0.5 and r != ratios[i - 1]
    ]
    assert fired == expected


def test_alert_id_is_deterministic_and_distinguishes_inputs() -> None:
    a = alert_id(AlertKind.ZSCORE, 60, T0)
    assert a == alert_id(AlertKind.ZSCORE, 60, T0)
    others = {
        alert_id(AlertKind.ZSCORE, 900, T0),
        alert_id(AlertKind.ZSCORE, 60, T0 + 60),
        alert_id(AlertKind.VOLUME_SPIKE, 60, T0),
    }
    assert len(others | {a}) == 4
    # Pinned: downstream systems may have stored ids; changing the scheme is a breaking change.
    assert a == PINNED_ZSCORE_60_T0


def test_build_alert_fills_the_schema() -> None:
    rules = AlertRules(CFG)
    rules.evaluate(window(T0, 20, 10))
    [decision] = rules.evaluate(window(T0 + 60, 20, 18))
    alert = build_alert(decision, emitted_at=datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert alert.kind is AlertKind.THRESHOLD_CROSSED
    assert alert.direction is AlertDirection.UP
    assert alert.window_start == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert alert.window_end == datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    assert alert.bullish_ratio == pytest.approx(0.9)
    assert alert.baseline == 0.7
    assert alert.alert_id == alert_id(AlertKind.THRESHOLD_CROSSED, 60, T0 + 60)
    assert "crossed above 0.70" in alert.message


# -- the memory of published ids -------------------------------------------------------------


def test_seen_alerts_forget_ids_once_their_window_is_past_the_horizon() -> None:
    seen = SeenAlerts(horizon_s=90)
    for i in range(10):
        seen.add(f"a{i}", window_end=T0 + 60 * (i + 1))
    assert len(seen) == 10
    # Windows ending before T0 + 300 - 90 = T0 + 210, i.e. a0..a2 (ends 60, 120, 180), go.
    assert seen.forget_before(T0 + 300) == 3
    assert "a2" not in seen
    assert "a3" in seen
    assert len(seen) == 7
    assert seen.forget_before(T0 + 300) == 0  # idempotent
    # Re-adding an id with a later end keeps it until the later end is past the horizon.
    seen.add("a3", window_end=T0 + 10_000)
    assert seen.forget_before(T0 + 1000) == 6
    assert list(seen._end) == ["a3"]


@settings(max_examples=30, deadline=None)
@given(ends=st.lists(st.integers(0, 100), min_size=1, max_size=200), horizon=st.integers(0, 30))
def test_seen_alerts_stay_bounded_by_the_horizon(ends: list[int], horizon: int) -> None:
    """A stream of alerts with advancing windows: what is remembered is exactly the ids whose
    window ended within the horizon of the watermark, however long the stream runs."""
    seen = SeenAlerts(horizon_s=horizon)
    latest: dict[str, int] = {}
    for step, end in enumerate(ends):
        alert = f"id{end % 17}"
        seen.add(alert, window_end=step + end)
        latest[alert] = max(latest.get(alert, -1), step + end)
        watermark = step + 1
        seen.forget_before(watermark)
        kept = {a for a, e in latest.items() if e >= watermark - horizon}
        assert {a for a in latest if a in seen} == kept, step
