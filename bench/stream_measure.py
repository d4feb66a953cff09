"""The measurements of bench/stream_throughput.py, one function each, over any backend.

    ceiling  forward passes only, texts pre-cleaned and pre-tokenized, grouped as serve groups
             them (micro-batches of batch_max_messages in stream order, each planned by
             plan_batches_by_cost with the backend's call_overhead_tokens).
    serve    StreamWorker end to end over a pre-filled topic, first consume -> last acknowledged
             output, with busy seconds per stage and the broker process's CPU seconds.
    naive    per message: poll, clean, tokenize, one torch forward, produce, flush.
    latency  input produced -> output acknowledged, replay paced at a given rate.

Stage timers wrap the backend, the text pipeline and two worker methods from the outside (as
bench/gpu/serve.py does), so serving code carries no benchmark hooks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.kafka import create_topics
from ops.settings import KafkaSettings, Settings, TextSettings
from stream.backends.base import Backend
from stream.core.planning import plan_batches_by_cost, softmax
from stream.core.text import TextPipeline

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def fresh_pipeline(text: TextSettings) -> TextPipeline:
    """A text pipeline with an empty cache and its language model loaded (a long-running
    worker pays that load before its first message). The warm-up text never occurs in the
    stream, so its cache entry cannot flatter a run."""
    pipeline = TextPipeline(text)
    pipeline.process_batch(["warm the language model up with an english sentence"])
    return pipeline


def in_thread(fn: Callable[..., Any], *args: Any, init: Callable[[], None] | None = None) -> Any:
    """Run `fn` on a fresh thread, as serve runs its forward passes (torch's intra-op threads
    are per calling thread); `init` runs there first (the backend's init_thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            if init is not None:
                init()
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="bench-forward")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def measure_ceiling(
    backend: Backend, pipeline: TextPipeline, texts: list[str], batch_max: int, batch_size: int
) -> dict[str, Any]:
    prepared: list[list[list[int]]] = []
    for lo in range(0, len(texts), batch_max):
        cleaned = pipeline.process_batch(texts[lo : lo + batch_max])
        prepared.append(backend.encode([c.text for c in cleaned if c.kept and c.text]).input_ids)
    overhead = backend.call_overhead_tokens
    for idx in plan_batches_by_cost([len(x) for x in prepared[0]], batch_size, overhead)[:2]:
        backend.forward_logits([prepared[0][i] for i in idx])  # warm-up: first shapes
    chunk_s: list[float] = []
    cpu0 = time.thread_time()
    start = time.perf_counter()
    for ids in prepared:
        t_chunk = time.perf_counter()
        for idx in plan_batches_by_cost([len(x) for x in ids], batch_size, overhead):
            backend.forward_logits([ids[i] for i in idx])
        chunk_s.append(time.perf_counter() - t_chunk)
    total = time.perf_counter() - start
    cpu = time.thread_time() - cpu0
    classified = sum(len(p) for p in prepared)
    return {
        "inputs": len(texts),
        "classified": classified,
        "seconds": round(total, 3),
        "rate": round(len(texts) / total, 2),
        "cpu_seconds": round(cpu, 3),
        "cpu_rate": round(len(texts) / cpu, 2),
        "one_batch_s": total / max(1, classified) * batch_size,
        "one_micro_batch_s_mean": statistics.fmean(chunk_s),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


# -- serve ----------------------------------------------------------------------------------------


class StageTimer:
    """Busy seconds per stage. Each stage runs on one thread (decode/publish on the Kafka thread,
    clean/tokenize on stream-prep, forward on stream-infer), so no lock is needed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def add(self, name: str, seconds: float, cpu: float | None = None) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if cpu is not None:
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wall and CPU time of the calling thread (a 1-thread ORT session or torch forward runs
        its kernels on the caller, so CPU time is what the stage cost, whoever else ran)."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0, time.thread_time() - c0)

        return timed


class _Timed:
    """A proxy that times some methods of `inner` and passes everything else through."""

    def __init__(self, inner: Any, timer: StageTimer, methods: dict[str, str]) -> None:
        self._inner = inner
        for method, stage in methods.items():
            setattr(self, method, timer.wrap(stage, getattr(inner, method)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def stream_settings(
    kafka: KafkaSettings, inp: str, out: str, dlq: str, args: argparse.Namespace
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka=kafka,
        topics={"input": [inp], "output": out, "dead_letter": dlq},
        model={"batch_size": args.batch_size},
        stream={
            "group_id": f"bench-{uuid.uuid4().hex[:8]}",
            "session_timeout_ms": 6000,
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
            "batch_linger_ms": args.linger_ms,
            "batch_max_messages": args.batch_max_messages,
            "include_text": True,
            "torch_threads": args.threads,
        },
    )


def _topics(kafka: KafkaSettings, prefix: str) -> tuple[str, str, str]:
    inp = f"{prefix}-in-{uuid.uuid4().hex[:8]}"
    out, dlq = inp.replace("-in-", "-out-"), inp.replace("-in-", "-dlq-")
    create_topics(kafka, [inp, out, dlq], partitions=1)
    return inp, out, dlq


def measure_serve(
    kafka: KafkaSettings,
    backend: Backend,
    text: TextSettings,
    csv: Path,
    args: argparse.Namespace,
    *,
    broker_pid: int | None,
) -> dict[str, Any]:
    import stream.serve.worker as worker_mod
    from stream.apps.replay import replay
    from stream.core.steps import Batch
    from stream.serve import ServeConfig, StreamWorker

    inp, out, dlq = _topics(kafka, "bench")
    sent = replay(kafka, csv, inp, limit=args.messages, loop=True, progress=False).sent
    assert sent == args.messages, sent
    timer = StageTimer()
    pipeline = _Timed(fresh_pipeline(text), timer, {"process_batch": "clean"})
    timed_backend = _Timed(backend, timer, {"encode": "tokenize", "forward_logits": "forward"})

    class TimedWorker(StreamWorker):
        def _publish(self, batch: Batch) -> None:
            timer.add("prep_stage", batch.prep_seconds)
            timer.add("infer_stage", batch.inference_seconds)
            timer.wrap("publish", super()._publish)(batch)

    worker = TimedWorker(
        ServeConfig.of(stream_settings(kafka, inp, out, dlq, args)),
        timed_backend,  # type: ignore[arg-type]
        pipeline,  # type: ignore[arg-type]
        max_messages=sent,
        serve_http=False,
    )
    original_decode = worker_mod.decode_message
    worker_mod.decode_message = timer.wrap("decode", original_decode)  # type: ignore[assignment]
    cpu0, broker0 = time.process_time(), process_cpu_s(broker_pid)
    try:
        counters = worker.run(threading.Event())
    finally:
        worker_mod.decode_message = original_decode  # type: ignore[assignment]
    cpu, broker1 = time.process_time() - cpu0, process_cpu_s(broker_pid)
    assert counters.first_consume_at is not None
    assert counters.last_output_at is not None
    span = counters.last_output_at - counters.first_consume_at
    consumed = counters.consumed
    st = timer.seconds
    threads = {
        "kafka (decode + build records + produce)": st.get("decode", 0) + st.get("publish", 0),
        "stream-prep (clean + tokenize + plan)": st.get("prep_stage", 0),
        "stream-infer (forward + softmax)": st.get("infer_stage", 0),
    }
    return {
        "inputs": consumed,
        "outputs_acked": counters.outputs_acked,
        "classified": counters.classified,
        "skipped": counters.skipped,
        "dead_lettered": counters.dead_lettered,
        "micro_batches": counters.batches,
        "seconds": round(span, 3),
        "rate": round(consumed / span, 2),
        "process_cpu_s": round(cpu, 2),
        "cpu_rate": round(consumed / cpu, 2),
        "stage_cpu_us_per_tweet": {
            k: round(v / consumed * 1e6, 1) for k, v in sorted(timer.cpu.items())
        },
        "broker_cpu_s": None if broker0 is None or broker1 is None else round(broker1 - broker0, 2),
        "stage_us_per_tweet": {k: round(v / consumed * 1e6, 1) for k, v in sorted(st.items())},
        "thread_busy_share": {k: round(v / span, 3) for k, v in threads.items()},
        "thread_bound_tweets_per_s": {k: round(consumed / v, 1) for k, v in threads.items() if v},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "input_topic": inp,
    }


def measure_naive(
    kafka: KafkaSettings, torch_backend: Backend, text: TextSettings, topic: str, n: int
) -> dict[str, Any]:
    """One message at a time with torch fp32: the loop a user writes first."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    from ops.kafka import message_timestamp_ms, producer_config
    from ops.settings import InputFormat
    from stream.core import decode_message, sentiment_record

    out = f"bench-naive-out-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, [out], partitions=1)
    pipeline = fresh_pipeline(text)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"naive-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    producer = Producer(producer_config(kafka))
    fmt = InputFormat()
    done = 0
    start: float | None = None
    cpu0 = 0.0
    while done < n:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        if start is None:
            start, cpu0 = time.perf_counter(), time.process_time()
        item = decode_message(msg, fmt, 65536, timestamp_ms=message_timestamp_ms(msg))
        assert item.tweet is not None
        clean = pipeline.process_batch([item.tweet.text])[0]
        probs = None
        if clean.kept and clean.text:
            ids = torch_backend.encode([clean.text]).input_ids
            logits = torch_backend.forward_logits(ids)
            probs = softmax(logits, torch_backend.temperature)[0].tolist()
        record = sentiment_record(
            item,
            clean,
            probs,
            labels=torch_backend.labels,
            model_version=torch_backend.model_version,
            include_text=True,
            processed_time=datetime.now(UTC),
        )
        producer.produce(out, key=record.id.encode(), value=record.model_dump_json().encode())
        producer.flush()
        done += 1
    assert start is not None
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    consumer.close()
    return {
        "inputs": done,
        "seconds": round(seconds, 3),
        "rate": round(done / seconds, 2),
        "process_cpu_s": round(cpu, 3),
        "cpu_rate": round(done / cpu, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _pct(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def measure_latency(
    kafka: KafkaSettings,
    backend: Backend,
    text: TextSettings,
    csv: Path,
    args: argparse.Namespace,
    *,
    rate: float,
) -> dict[str, Any]:
    from stream.apps.replay import replay
    from stream.serve import ServeConfig, StreamWorker

    inp, out, dlq = _topics(kafka, "bench-lat")
    warm = int(rate * args.warmup_seconds)
    n = warm + int(rate * args.latency_seconds)
    latencies: list[float] = []
    worker = StreamWorker(
        ServeConfig.of(stream_settings(kafka, inp, out, dlq, args)),
        backend,
        fresh_pipeline(text),
        max_messages=n,
        serve_http=False,
        latency_observer=latencies.append,
    )
    thread = threading.Thread(target=lambda: worker.run(threading.Event()))
    thread.start()
    deadline = time.monotonic() + 60
    while not worker.assigned and time.monotonic() < deadline:
        time.sleep(0.05)
    summary = replay(kafka, csv, inp, rate=rate, limit=n, loop=True, progress=False)
    thread.join(120)
    # A fresh worker's first seconds run slow (first shapes, thread start): reported apart.
    warmup, lat = sorted(latencies[:warm]), sorted(latencies[warm:])
    batches = next(iter(worker.metrics.batch_size.collect())).samples
    count = next(s.value for s in batches if s.name.endswith("_count"))
    total = next(s.value for s in batches if s.name.endswith("_sum"))
    return {
        "target_rate": round(rate, 1),
        "achieved_input_rate": round(summary.rate, 1),
        "warmup_inputs": len(warmup),
        "warmup_p99_ms": round(_pct(warmup, 0.99) * 1000, 1) if warmup else None,
        "inputs": len(lat),
        "p50_ms": round(_pct(lat, 0.50) * 1000, 1),
        "p90_ms": round(_pct(lat, 0.90) * 1000, 1),
        "p99_ms": round(_pct(lat, 0.99) * 1000, 1),
        "max_ms": round(lat[-1] * 1000, 1),
        "mean_micro_batch": round(total / count, 1) if count else None,
    }
