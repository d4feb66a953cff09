"""`cryptosent demo`: the whole system end to end on the embedded defaults.

broker → topics → quick model (trained only when missing or stale) → serve → dashboard and
alerts → replay → labeled output as it arrives → summary → clean shutdown.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from cryptosent.demo_report import LiveScore, print_summary, service_time
from ops.broker import EmbeddedBroker
from ops.errors import UserError
from ops.kafka import consumer_config, create_topics
from ops.logging import get_logger
from ops.settings import DemoSettings, Settings

log = get_logger(__name__)

DEMO_DATA_DIR = Path(__file__).resolve().parents[1] / "stream" / "demo_data"
DEMO_TRAIN_CSV = DEMO_DATA_DIR / "crypto_tweets_demo_sample.csv"
# Disjoint from the training sample, so the live accuracy the demo prints is not on seen texts.
DEMO_STREAM_CSV = DEMO_DATA_DIR / "crypto_tweets_demo_stream.csv"
SHOW_FIRST = 25


def _artifact_is_current(directory: Path, csv: Path) -> bool:
    """Reuse an existing demo model unless it was trained on other data."""
    from stream.artifact import read_meta
    from trainer.data import csv_fingerprint

    try:
        meta = read_meta(directory)
    except UserError:
        return False
    return meta.data is not None and meta.data.csv_sha256 == csv_fingerprint(csv)


def ensure_model(settings: Settings, out: Path, csv: Path, echo: Callable[[str], None]) -> Path:
    if _artifact_is_current(out, csv):
        echo(f"[demo] reusing model {out} (trained on {csv.name})")
        return out
    from trainer.train import train

    echo(f"[demo] training a quick model on {csv} -> {out} (profile quick, CPU-sized)")
    train_cfg = settings.train.model_copy(
        update={"profile": "quick", "out": out, "overwrite": True}
    )
    outcome = train(settings.model_copy(update={"train": train_cfg}), csv, progress=False)
    m = outcome.metrics.get("model", outcome.metrics)
    echo(
        f"[demo] trained {outcome.meta.model_version} in {outcome.seconds:.0f}s; "
        f"test macro-F1 {m.get('macro_f1', float('nan')):.3f}, "
        f"accuracy {m.get('accuracy', float('nan')):.3f} (report: {out / 'report' / 'report.md'})"
    )
    return out


@contextlib.contextmanager
def _thread(name: str, target: Callable[[], Any]) -> Iterator[threading.Thread]:
    errors: list[BaseException] = []

    def _run() -> None:
        try:
            target()
        except BaseException as exc:  # surfaced by the caller after join
            errors.append(exc)
            log.error("demo_thread_failed", thread=name, error=str(exc))

    thread = threading.Thread(target=_run, name=name, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout=60)
        if errors and not isinstance(errors[0], KeyboardInterrupt):
            err = errors[0]
            if isinstance(err, UserError):
                raise err
            raise UserError(f"demo {name} failed: {type(err).__name__}: {err}")


def _read_outputs(
    settings: Settings,
    score: LiveScore,
    expected: Callable[[], int | None],
    deadline_s: float,
    out: TextIO,
) -> None:
    """Print records from the output and dead-letter topics until every sent tweet is accounted
    for (or the deadline passes)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from ops.kafka import list_topics
    from stream.apps.tail import format_record

    topics = list_topics(settings.kafka)
    consumer = Consumer(consumer_config(settings.kafka, f"cryptosent-demo-reader-{time.time_ns()}"))
    consumer.assign(
        [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in (settings.topics.output, settings.topics.dead_letter)
            for p in range(topics[t])
        ]
    )
    deadline = time.monotonic() + deadline_s
    last_progress = time.monotonic()
    try:
        while time.monotonic() < deadline:
            want = expected()
            if want is not None and score.total >= want:
                return
            msg = consumer.poll(0.2)
            now = time.monotonic()
            if now - last_progress >= 2.0 and score.total > SHOW_FIRST:
                counts = ", ".join(f"{k}={v}" for k, v in sorted(score.counts.items()))
                print(f"[demo] … {score.total} records so far ({counts})", file=out, flush=True)
                last_progress = now
            if msg is None or msg.error():
                continue
            value = msg.value()
            try:
                obj = json.loads(value) if value else {}
            except ValueError:
                obj = {}
            ts_type, ts = msg.timestamp()
            score.observe(obj if isinstance(obj, dict) else {}, ts if ts_type else None)
            if score.total <= SHOW_FIRST:
                line, _ = format_record(value)
                print(f"  {line}", file=out, flush=True)
                if score.total == SHOW_FIRST:
                    print("[demo] … (further records summarised every 2s)", file=out, flush=True)
    finally:
        consumer.close()


def run_demo(
    settings: Settings,
    *,
    model_dir: Path,
    embedded: bool = True,
    keep_running: bool = False,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    from cryptosent.demo_pace import choose_pace, measure_capacity
    from stream.apps.alerts import run_alerts
    from stream.apps.dashboard import Dashboard
    from stream.apps.replay import ReplaySummary, load_rows, replay
    from stream.artifact import read_meta
    from stream.backends import load_backend
    from stream.core.text import TextPipeline
    from stream.serve import ServeConfig, StreamWorker

    out = out or sys.stdout
    stop = stop or threading.Event()

    def echo(text: str) -> None:
        print(text, file=out, flush=True)

    train_csv = settings.demo_data or DEMO_TRAIN_CSV
    stream_csv = settings.demo.replay_csv or DEMO_STREAM_CSV
    for path in (train_csv, stream_csv):
        if not Path(path).is_file():
            raise UserError(f"demo data {path} does not exist", hint="set CRYPTOSENT_DEMO_DATA")
    started = time.perf_counter()

    with contextlib.ExitStack() as stack:
        if embedded:
            broker = stack.enter_context(EmbeddedBroker(host=settings.broker.host))
            settings = settings.model_copy(
                update={
                    "kafka": settings.kafka.model_copy(
                        update={"bootstrap_servers": broker.bootstrap}
                    )
                }
            )
            # A short session timeout: with the default, a group join on Tansu takes about 20 s.
            settings = settings.model_copy(
                update={
                    "stream": settings.stream.model_copy(update={"session_timeout_ms": 6000}),
                    "alerts": settings.alerts.model_copy(update={"session_timeout_ms": 6000}),
                }
            )
            echo(f"[demo] 1. embedded broker (Tansu, in memory) at {broker.bootstrap}")
        else:
            echo(f"[demo] 1. using Kafka at {settings.kafka.bootstrap_servers}")
        t = settings.topics
        created = create_topics(
            settings.kafka, [*t.input, t.output, t.dead_letter, t.alerts], partitions=t.partitions
        )
        echo(f"[demo] 2. topics ready ({', '.join(created) or 'already there'})")

        ensure_model(settings, model_dir, Path(train_csv), lambda s: echo(f"[demo] 3. {s[7:]}"))
        # `auto` (the default): the artifact's gated ONNX file on a CPU, torch on a GPU.
        threads = settings.stream.torch_threads
        model = load_backend(
            settings.model.model_copy(update={"artifact_dir": model_dir}), threads=threads
        )
        text_pipeline = TextPipeline(read_meta(model_dir).text)
        sample = [
            r.text
            for r in load_rows(Path(stream_csv), settings.data, keep_event_time=False)[0][:264]
        ]
        capacity = measure_capacity(
            model, text_pipeline, sample, settings.model.batch_size, threads
        )
        # "Set by the user" = differs from the default: load_settings re-validates the whole
        # tree when any flag is given, so model_fields_set cannot tell flags from defaults.
        default = DemoSettings()
        pace = choose_pace(
            rate=settings.demo.rate,
            limit=settings.demo.limit,
            capacity=capacity,
            rate_set=settings.demo.rate != default.rate,
            limit_set=settings.demo.limit != default.limit,
        )
        serve_settings = settings.model_copy(
            update={"stream": settings.stream.model_copy(update={"metrics_port": 0})}
        )
        worker = StreamWorker(ServeConfig.of(serve_settings), model, text_pipeline)
        worker_stop = threading.Event()
        stack.enter_context(_thread("serve", lambda: worker.run(worker_stop)))
        stack.callback(worker_stop.set)
        if not worker.started.wait(60):
            raise UserError("the stream worker did not start within 60s")
        # Replay only once the worker owns partitions, so latency figures measure the stream and
        # not the group join.
        joined_by = time.monotonic() + 60
        while not worker.assigned and time.monotonic() < joined_by and not stop.is_set():
            stop.wait(0.05)
        echo(
            f"[demo] 4. serving {model.model_version} with {model.name} "
            f"(metrics http://127.0.0.1:{worker.metrics_port}/metrics)"
        )

        side_stop = threading.Event()
        dash_settings = settings.model_copy(
            update={"dashboard": settings.dashboard.model_copy(update={"port": 0})}
            if _port_busy(settings.dashboard.host, settings.dashboard.port)
            else {}
        )
        dashboard = Dashboard(
            dash_settings.dashboard, settings.kafka, settings.topics, settings.alerts
        )
        url = dashboard.start()
        stack.callback(dashboard.stop)
        alert_cfg = settings.alerts.model_copy(update={"metrics_port": None})
        stack.enter_context(
            _thread(
                "alerts",
                lambda: run_alerts(alert_cfg, settings.kafka, settings.topics, side_stop),
            )
        )
        stack.callback(side_stop.set)
        echo(f"[demo]    dashboard: {url}")

        replayed: list[ReplaySummary] = []
        limit, rate = pace.limit, pace.rate

        def _replay() -> None:
            replayed.append(
                replay(
                    settings.kafka,
                    Path(stream_csv),
                    t.input[0],
                    rate=rate,
                    limit=limit,
                    loop=True,
                    data=settings.data,
                    progress=False,
                    stop=stop,
                )
            )

        echo(
            f"[demo] 5. replaying {Path(stream_csv).name} at {rate:g}/s ({pace.reason}), "
            f"{limit} tweets"
        )
        echo("[demo] 6. labeled output as it arrives (id, label, P(positive), status, text):")
        score = LiveScore()
        with _thread("replay", _replay):
            _read_outputs(
                settings,
                score,
                lambda: replayed[0].sent if replayed else None,
                deadline_s=max(120.0, 3 * limit / rate),
                out=out,
            )
        summary: dict[str, Any] = {
            "model_version": model.model_version,
            "backend": model.name,
            "capacity_per_s": None if capacity is None else round(capacity, 1),
            "replay_rate_per_s": rate,
            **service_time(worker.metrics),
            "replayed": replayed[0].sent if replayed else 0,
            "bad_rows": replayed[0].bad_rows if replayed else 0,
            **score.summary(),
            "dashboard": url,
        }
        print_summary(summary, echo)
        if keep_running:
            echo(f"[demo] still running; dashboard at {url} — press Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.is_set():
                    stop.wait(0.5)
        echo("[demo] 8. shutting down: serve drains and commits, then dashboard, alerts, broker")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    echo(f"[demo] done in {summary['seconds']:.0f}s")
    return summary


def _port_busy(host: str, port: int) -> bool:
    from ops.broker import port_open

    return port != 0 and port_open("127.0.0.1" if host in ("0.0.0.0", "") else host, port)
