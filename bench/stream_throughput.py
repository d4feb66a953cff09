"""Stream throughput and latency of `serve` per backend, against its ceiling and a naive loop.

One run, one trained artifact with its ONNX exports, one machine. For each backend (torch fp32,
ONNX fp32, gated ONNX int8; bench/stream_measure.py has the definitions):
    ceiling   forward passes only, in serve's grouping;
    serve     StreamWorker end to end on the embedded broker, with busy time per stage;
    latency   p50/p99 produce -> output acknowledged with replay at half of serve's rate.
Once: naive (torch fp32, one prediction and one flush per message), serve with the best gated
backend on Apache Kafka as well (`ops.broker.start_broker("apache-kafka")`; skipped with a
reason when Java or Maven is missing), and preparation alone at 1 and 2 workers.

Writes bench/results/stream_throughput.json and .md. On a shared machine keep it short:
    nice -n 10 .venv/bin/python bench/stream_throughput.py --model DIR
DIR defaults to models/demo (what `cryptosent demo` trains; `cryptosent export --model DIR
--csv CSV` adds the ONNX files to an older artifact).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import DEFAULT_CSV, prep  # noqa: E402
from stream_measure import (  # noqa: E402
    in_thread,
    measure_ceiling,
    measure_latency,
    measure_naive,
    measure_serve,
)
from stream_report import closing_analysis, write_results  # noqa: E402

from ops.errors import UserError  # noqa: E402
from ops.logging import configure_logging  # noqa: E402
from ops.settings import DataSettings, KafkaSettings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BACKENDS = ("torch", "onnx", "onnx-int8")
P99_GOAL_MS = 500.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "demo")
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--messages", type=int, default=1536, help="tweets per ceiling/serve run")
    ap.add_argument("--naive-messages", type=int, default=200)
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--warmup-seconds", type=float, default=3.0)
    ap.add_argument("--prep-n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-max-messages", type=int, default=None)
    ap.add_argument("--linger-ms", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="inference threads, every phase")
    ap.add_argument(
        "--engines", default="embedded,apache-kafka", help="brokers for the best backend's serve"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json")
    return ap.parse_args(argv)


def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "niceness": os.nice(0),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_backend(
    name: str,
    args: argparse.Namespace,
    meta: Any,
    texts: list[str],
    *,
    kafka: KafkaSettings,
    pid: int | None,
) -> tuple[Any, dict[str, Any]]:
    from stream_measure import fresh_pipeline

    from stream.backends.select import open_backend

    backend = open_backend(
        name,  # type: ignore[arg-type]
        args.model,
        device="cpu",
        precision="fp32",
        threads=args.threads,
    )
    order = [texts[i % len(texts)] for i in range(args.messages)]
    ceiling = in_thread(
        measure_ceiling,
        backend,
        fresh_pipeline(meta.text),
        order,
        args.batch_max_messages,
        args.batch_size,
        init=lambda: backend.init_thread(args.threads),
    )
    print(f"{name}: ceiling {ceiling['rate']}/s", file=sys.stderr, flush=True)
    serve = measure_serve(kafka, backend, meta.text, args.csv, args, broker_pid=pid)
    print(f"{name}: serve {serve['rate']}/s", file=sys.stderr, flush=True)
    latency = measure_latency(kafka, backend, meta.text, args.csv, args, rate=serve["rate"] * 0.5)
    print(f"{name}: latency p99 {latency['p99_ms']} ms", file=sys.stderr, flush=True)
    return backend, {
        "name": backend.name,
        "call_overhead_tokens": backend.call_overhead_tokens,
        "ceiling": ceiling,
        "serve": serve,
        "serve_vs_ceiling": round(serve["rate"] / ceiling["rate"], 3),
        "serve_vs_ceiling_cpu": round(serve["cpu_rate"] / ceiling["cpu_rate"], 3),
        "latency": latency,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only:
        write_results(json.loads((args.out / "stream_throughput.json").read_text()), args.out)
        return 0
    try:
        return measure(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def measure(args: argparse.Namespace) -> int:
    configure_logging("WARNING", "console")
    from ops.broker import start_broker
    from stream.apps.replay import load_rows
    from stream.artifact import read_meta
    from stream.backends.select import choose_backend
    from stream.core import micro_batch_size

    meta = read_meta(args.model)
    if "fp32" not in meta.onnx:
        raise UserError(
            f"{args.model} has no ONNX export",
            hint=f"run `cryptosent export --model {args.model} --csv TRAINING_CSV`",
        )
    args.batch_max_messages = micro_batch_size(args.batch_max_messages, args.batch_size)
    best, best_reason = choose_backend("auto", False, meta)
    rows, _ = load_rows(args.csv, DataSettings(), keep_event_time=False)
    texts = [r.text for r in rows]
    info = machine()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": info,
        "model": meta.model_version,
        "config": {
            "batch_size": args.batch_size,
            "batch_max_messages": args.batch_max_messages,
            "linger_ms": args.linger_ms,
            "threads": args.threads,
            "messages": args.messages,
            "csv": args.csv.name,
        },
        "backend": best,
        "backend_reason": best_reason,
        "backends": {},
        "engines": {},
    }
    torch_backend = None
    with start_broker("embedded") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        for name in BACKENDS:
            if name == "onnx-int8" and "int8" not in meta.onnx:
                result["backends"][name] = {"skipped": "no gated int8 file in the artifact"}
                continue
            backend, figures = run_backend(name, args, meta, texts, kafka=kafka, pid=broker.pid)
            result["backends"][name] = figures
            if name == "torch":
                torch_backend = backend
        assert torch_backend is not None
        naive = in_thread(
            measure_naive,
            kafka,
            torch_backend,
            meta.text,
            result["backends"]["torch"]["serve"]["input_topic"],
            args.naive_messages,
            init=lambda: torch_backend.init_thread(args.threads),
        )
        print(f"naive {naive['rate']}/s", file=sys.stderr, flush=True)
        # Clients of finished phases that only a reference cycle keeps alive would otherwise
        # outlive the broker and print a reconnect error every few milliseconds.
        gc.collect()
    result["naive"] = naive
    for figures in result["backends"].values():
        if "serve" in figures:
            figures["serve_vs_naive"] = round(figures["serve"]["rate"] / naive["rate"], 2)
            figures["ceiling_vs_naive"] = round(figures["ceiling"]["rate"] / naive["rate"], 2)
            figures["serve_vs_naive_cpu"] = round(
                figures["serve"]["cpu_rate"] / naive["cpu_rate"], 2
            )
    result["engines"]["embedded"] = engine_row(result["backends"][best]["serve"], best)
    if "apache-kafka" in args.engines.split(","):
        result["engines"]["apache_kafka"] = serve_on_kafka(best, args, meta)
    result["prep"] = prep_alone(meta, texts, args.prep_n)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    summarise(result, meta)
    write_results(result, args.out)
    print(json.dumps(result["targets"], indent=2))
    return 0


def engine_row(serve: dict[str, Any], backend: str) -> dict[str, Any]:
    return {
        "backend": backend,
        "rate": serve["rate"],
        "seconds": serve["seconds"],
        "inputs": serve["inputs"],
        "broker_cpu_s": serve["broker_cpu_s"],
        "broker_cpu_us_per_tweet": (
            None
            if serve["broker_cpu_s"] is None
            else round(serve["broker_cpu_s"] / serve["inputs"] * 1e6, 1)
        ),
        "process_cpu_s": serve["process_cpu_s"],
    }


def serve_on_kafka(best: str, args: argparse.Namespace, meta: Any) -> dict[str, Any]:
    """The best backend's serve run again, on one local Apache Kafka node."""
    import time

    from ops.broker import start_broker
    from stream.backends.select import open_backend

    backend = open_backend(
        best,  # type: ignore[arg-type]
        args.model,
        device="cpu",
        precision="fp32",
        threads=args.threads,
    )
    t0 = time.perf_counter()
    try:
        with start_broker("apache-kafka") as broker:
            started = round(time.perf_counter() - t0, 1)
            print(f"apache kafka up in {started} s", file=sys.stderr, flush=True)
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            serve = measure_serve(kafka, backend, meta.text, args.csv, args, broker_pid=broker.pid)
            gc.collect()
    except UserError as exc:
        return {"skipped": str(exc)}
    print(f"apache kafka: serve {serve['rate']}/s", file=sys.stderr, flush=True)
    return {**engine_row(serve, best), "broker_start_s": started, "serve": serve}


def prep_alone(meta: Any, texts: list[str], n: int) -> dict[str, Any]:
    runs = [prep(meta.text, texts[:n], workers, rounds=2) for workers in (1, 2)]
    return {
        "tweets_per_s_per_core": {str(r["workers"]): r["tweets_per_cpu_s"] for r in runs},
        "goal_tweets_per_s_per_core": 5000,
        "runs": runs,
    }


def summarise(result: dict[str, Any], meta: Any) -> None:
    best = result["backends"][result["backend"]]
    variant = {"onnx": "fp32", "onnx-int8": "int8"}.get(result["backend"])
    entry = meta.onnx.get(variant) if variant else None
    result["quantization"] = {
        "variant": variant,
        "method": entry.method if entry else "torch fp32 (reference)",
        "macro_f1_delta": entry.macro_f1_delta if entry else 0.0,
        "agreement": entry.agreement if entry else 1.0,
        "gate": "macro-F1 drop <= 0.01 and agreement >= 0.97 against fp32 torch (test split)",
    }
    lat = best["latency"]
    result["targets"] = {
        "backend": result["backend"],
        "serve_vs_naive": best["serve_vs_naive"],
        "serve_vs_naive_goal": 10.0,
        "serve_vs_naive_met": best["serve_vs_naive"] >= 10.0,
        "serve_vs_naive_cpu": best["serve_vs_naive_cpu"],
        "serve_vs_ceiling": best["serve_vs_ceiling"],
        "serve_vs_ceiling_cpu": best["serve_vs_ceiling_cpu"],
        "serve_vs_ceiling_goal": 0.85,
        "serve_vs_ceiling_met": best["serve_vs_ceiling"] >= 0.85,
        "p99_ms": lat["p99_ms"],
        "p99_goal_ms": P99_GOAL_MS,
        "p99_met": lat["p99_ms"] <= P99_GOAL_MS,
    }
    result["where_time_goes"] = closing_analysis(best, result["naive"])


if __name__ == "__main__":
    raise SystemExit(main())
