"""End to end in a real browser: replay -> serve (tiny random BERT) -> dashboard -> headless
Chromium. Playwright drives Debian's /usr/bin/chromium over the DevTools protocol; no browser is
downloaded (`playwright install` is never run).

The screenshot lands in the test's tmp_path and in tests/output/dashboard.png.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.settings import KafkaSettings, Settings
from schemas.alerts import AlertDirection, AlertKind
from schemas.messages import SentimentOut
from stream.apps.dashboard import Dashboard
from stream.core.rules import Decision, build_alert
from stream.core.windows import WindowStats
from tests.integration.synthetic import produce_raw, read_all, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
DEMO_CSV = ROOT / "stream" / "demo_data" / "crypto_tweets_demo_stream.csv"
SCREENSHOT = ROOT / "tests" / "output" / "dashboard.png"
N_TWEETS = 60
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def _chromium() -> str:
    found = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium")
    found = found or shutil.which("chromium-browser")
    if found is None:
        message = "Chromium not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a missing browser is a broken CI image
        pytest.skip(message)
    return found


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[object]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the playwright Python package is not installed")
        pytest.skip("the playwright Python package is not installed")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            timezone_id="UTC",
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_dashboard_shows_replayed_stream_in_chromium(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    tmp_path: Path,
    browser_page: object,
) -> None:
    from playwright.sync_api import Page

    from stream.apps.replay import replay
    from stream.inference import load_model
    from stream.serve import ServeConfig, StreamWorker
    from tests.tiny_model import make_tiny_artifact

    page = browser_page
    assert isinstance(page, Page)
    inp, out = make_topic("in", 2), make_topic("out", 2)
    dlq, alerts = make_topic("dlq"), make_topic("alerts")
    settings = Settings(
        _env_file=None,
        kafka=kafka_settings,
        topics={"input": [inp], "output": out, "dead_letter": dlq, "alerts": alerts},
        model={"batch_size": 16, "device": "cpu"},
        stream={
            "group_id": f"g-{inp}",
            "session_timeout_ms": 6000,
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
            "batch_linger_ms": 20,
        },
        dashboard={"port": 0, "bucket_s": 1, "rolling_s": 10, "push_interval_s": 0.25},
    )
    model = load_model(make_tiny_artifact(tmp_path / "model"), device="cpu")

    with Dashboard(settings.dashboard, settings.kafka, settings.topics, settings.alerts) as dash:
        # 1. replay through serve
        stop = threading.Event()
        worker = StreamWorker(
            ServeConfig.of(settings), model, model.pipeline, max_messages=N_TWEETS, serve_http=False
        )
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                worker.run(stop)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve, name="serve", daemon=True)
        thread.start()
        wait_until(lambda: bool(worker.assigned) or bool(errors), 60, "serve's assignment")
        # Paced, so the records are classified over a few seconds: several points on the chart.
        summary = replay(kafka_settings, DEMO_CSV, inp, limit=N_TWEETS, rate=20, progress=False)
        assert summary.sent == N_TWEETS
        thread.join(90)
        assert not thread.is_alive(), "serve did not finish the replay"
        assert not errors, errors

        # One alert, as `cryptosent alerts` would publish it, for the alerts pane.
        start = int(datetime.now(tz=UTC).timestamp()) // 60 * 60
        window = WindowStats(60, start, classified=20, positive=17, sum_p_positive=15.0)
        decision = Decision(AlertKind.THRESHOLD_CROSSED, AlertDirection.UP, window, 0.85, 0.7)
        alert = build_alert(decision, datetime.now(tz=UTC))
        produce_raw(kafka_settings, alerts, [(alert.alert_id, alert.model_dump_json())])

        outputs = [SentimentOut.model_validate_json(v) for v in read_all(kafka_settings, out)]
        assert len(outputs) == N_TWEETS
        classified_ids = {o.id for o in outputs if o.status.value == "classified"}
        assert classified_ids

        # 2. open the page
        page.goto(dash.url)
        # 3. wait until the chart, the tweet list and the alert show the replayed records
        page.wait_for_function(
            """([n]) => {
                const app = document.getElementById('app');
                return Number(app.dataset.records) >= n
                    && Number(app.dataset.chartPoints) > 0
                    && Number(app.dataset.alerts) > 0
                    && document.querySelectorAll('#chart canvas').length > 0;
            }""",
            arg=[N_TWEETS],
            timeout=30_000,
        )
        shown = page.eval_on_selector_all(
            "tr[data-tweet-id]", "rows => rows.map(r => r.dataset.tweetId)"
        )
        assert shown, "no tweet rows"
        assert set(shown) <= classified_ids
        assert len(shown) == min(len(classified_ids), settings.dashboard.recent)
        assert page.get_attribute("#app", "data-classified") == str(len(classified_ids))
        assert page.locator(f'li[data-alert-id="{alert.alert_id}"]').count() == 1
        assert page.get_attribute("#status", "data-connected") == "true"
        canvas = page.eval_on_selector("#chart canvas", "c => [c.width, c.height]")
        assert canvas[0] > 100
        assert canvas[1] > 100
        health = page.request.get(dash.url + "healthz")
        assert health.status == 200

        # 4. screenshot
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    assert not dash.running


def test_asset_selector_shows_one_assets_series_in_chromium(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    tmp_path: Path,
    browser_page: object,
) -> None:
    """Output records that name assets (as serve writes them) and one alert for ETH and one for
    all assets: the selector lists the assets, and choosing ETH shows ETH's tweets, series and
    alert only; choosing "All assets" again shows everything."""
    from playwright.sync_api import Page

    from tests.integration.synthetic import produce, record

    page = browser_page
    assert isinstance(page, Page)
    out, alerts = make_topic("out", 2), make_topic("alerts")
    settings = Settings(
        _env_file=None,
        kafka=kafka_settings,
        topics={"output": out, "alerts": alerts},
        # Event time: the records' own spread times, several buckets per series.
        dashboard={
            "port": 0,
            "bucket_s": 1,
            "rolling_s": 10,
            "push_interval_s": 0.25,
            "time_axis": "event",
        },
    )
    now = datetime.now(tz=UTC).timestamp()
    eth = [
        record(now - 5 + i * 0.2, i % 4 != 0, id=f"eth-{i}", text=f"$ETH post {i}")
        for i in range(12)
    ]
    btc = [
        record(now - 5 + i * 0.3, i % 2 == 0, id=f"btc-{i}", text=f"Bitcoin post {i}")
        for i in range(8)
    ]
    both = [record(now - 1, True, id="both", text="$ETH and BTC")]
    recs = (
        [r.model_copy(update={"assets": ["ETH"]}) for r in eth]
        + [r.model_copy(update={"assets": ["BTC"]}) for r in btc]
        + [both[0].model_copy(update={"assets": ["ETH", "BTC"]})]
        + [record(now - 2, False, id="none", text="no coin named")]
    )
    produce(kafka_settings, out, recs)
    start = int(now) // 60 * 60
    published = []
    for asset in ("ETH", None):
        window = WindowStats(60, start, 20, 17, 0, 15.0, asset)
        decision = Decision(AlertKind.THRESHOLD_CROSSED, AlertDirection.UP, window, 0.85, 0.7)
        published.append(build_alert(decision, datetime.now(tz=UTC)))
    produce_raw(kafka_settings, alerts, [(a.alert_id, a.model_dump_json()) for a in published])
    eth_alert, all_alert = published

    with Dashboard(settings.dashboard, settings.kafka, settings.topics, settings.alerts) as dash:
        page.goto(dash.url)
        page.wait_for_function(
            """([n]) => Number(document.getElementById('app').dataset.records) >= n
                && Number(document.getElementById('asset').dataset.options) >= 2
                && Number(document.getElementById('app').dataset.alerts) >= 2""",
            arg=[len(recs)],
            timeout=30_000,
        )
        options = page.eval_on_selector_all("#asset option", "os => os.map(o => o.value)")
        assert options == ["", "ETH", "BTC"]  # by volume: 13 ETH (primary), 8 BTC

        page.select_option("#asset", "ETH")
        page.wait_for_function(
            "() => document.getElementById('app').dataset.asset === 'ETH'", timeout=30_000
        )
        page.wait_for_function(
            "() => Number(document.getElementById('app').dataset.chartPoints) > 1",
            timeout=30_000,
        )
        assert page.get_attribute("#app", "data-records") == str(len(eth) + 1)
        shown = page.eval_on_selector_all(
            "tr[data-tweet-id]", "rows => rows.map(r => [r.dataset.tweetId, r.dataset.assets])"
        )
        classified_eth = {r.id for r in eth if r.label is not None} | {"both"}
        assert {tweet_id for tweet_id, _ in shown} == classified_eth
        assert all(assets.split()[0] == "ETH" for _, assets in shown)
        assert ("both", "ETH BTC") in [tuple(row) for row in shown]
        alert_ids = page.eval_on_selector_all(
            "li[data-alert-id]", "li => li.map(x => [x.dataset.alertId, x.dataset.asset])"
        )
        assert alert_ids == [[eth_alert.alert_id, "ETH"]]
        assert page.text_content("#chart-title") == "ETH"
        assert "asset=ETH" in page.url
        shot = tmp_path / "dashboard-eth.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT.with_name("dashboard-eth.png"))

        page.select_option("#asset", "")
        page.wait_for_function(
            """([n]) => document.getElementById('app').dataset.asset === ''
                && Number(document.getElementById('app').dataset.records) === n""",
            arg=[len(recs)],
            timeout=30_000,
        )
        shown_alerts = page.eval_on_selector_all(
            "li[data-alert-id]", "li => li.map(x => x.dataset.alertId)"
        )
        assert sorted(shown_alerts) == sorted([eth_alert.alert_id, all_alert.alert_id])
    assert not dash.running
