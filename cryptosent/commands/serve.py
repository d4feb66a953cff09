"""`cryptosent serve`: classify a topic of tweets into a topic of sentiment records."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryptosent.common import add_global_args, add_kafka_args, settings_from_args, stop_on_signals
from ops.logging import get_logger


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="consume tweets, classify them in micro-batches, produce sentiment records",
        description="A consumer-group worker: reads TweetIn JSON from the input topic(s), writes "
        "one SentimentOut per input to the output topic (or one DeadLetter to the dead-letter "
        "topic). SIGTERM/SIGINT finish the in-flight batch, commit and exit 0; a second signal "
        "exits at once.",
    )
    add_global_args(p)
    add_kafka_args(p)
    p.add_argument(
        "--model",
        dest="model.artifact_dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="artifact directory written by `cryptosent train`",
    )
    t = p.add_argument_group("topics")
    t.add_argument(
        "--input-topic", dest="topics.input", metavar="TOPICS", default=None, help="comma list"
    )
    t.add_argument("--output-topic", dest="topics.output", metavar="TOPIC", default=None)
    t.add_argument("--dead-letter-topic", dest="topics.dead_letter", metavar="TOPIC", default=None)
    t.add_argument(
        "--create-topics",
        action="store_true",
        help="create missing topics (topics.partitions partitions) instead of failing",
    )
    g = p.add_argument_group("consumer group and delivery")
    g.add_argument("--group-id", dest="stream.group_id", metavar="ID", default=None)
    g.add_argument(
        "--group-instance-id",
        dest="stream.group_instance_id",
        metavar="ID",
        default=None,
        help="static membership; also makes the transactional.id stable",
    )
    g.add_argument(
        "--processing-guarantee",
        dest="stream.processing_guarantee",
        choices=["at_least_once", "exactly_once"],
        default=None,
    )
    b = p.add_argument_group("batching and model")
    b.add_argument(
        "--batch-size",
        dest="model.batch_size",
        metavar="N",
        type=int,
        default=None,
        help="sequences per forward pass",
    )
    b.add_argument(
        "--batch-max-messages",
        dest="stream.batch_max_messages",
        metavar="N",
        type=int,
        default=None,
        help="inputs per micro-batch (default 8 x --batch-size)",
    )
    b.add_argument(
        "--linger-ms", dest="stream.batch_linger_ms", metavar="MS", type=int, default=None
    )
    b.add_argument(
        "--backend",
        dest="model.backend",
        choices=["auto", "torch", "onnx", "onnx-int8"],
        default=None,
        help="auto (default): torch on a GPU, else the artifact's gated ONNX int8/fp32 file",
    )
    b.add_argument("--device", dest="model.device", choices=["auto", "cpu", "cuda"], default=None)
    b.add_argument(
        "--precision",
        dest="model.precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default=None,
    )
    b.add_argument(
        "--max-length", dest="model.max_length", metavar="TOKENS", type=int, default=None
    )
    b.add_argument(
        "--torch-threads",
        dest="stream.torch_threads",
        type=int,
        metavar="N",
        default=None,
        help="CPU threads for inference (default: all cores; set it under a CPU limit)",
    )
    t.add_argument(
        "--prep-processes",
        dest="stream.prep_processes",
        type=_process_count,
        metavar="N|auto",
        default=None,
        help="processes that clean text (default auto: none on a CPU, up to 8 on a GPU)",
    )
    t.add_argument(
        "--output-key",
        dest="stream.output_key",
        choices=["tweet_id", "primary_asset", "asset_fanout"],
        default=None,
        help="key of output records: tweet_id (default, one per input), primary_asset, or "
        "asset_fanout (one record per asset; docs/operations.md)",
    )
    p.add_argument(
        "--asset-map",
        dest="assets.map_path",
        metavar="TOML",
        type=Path,
        default=None,
        help="asset map for the `assets` of each record (default: the built-in map; "
        "docs/assets.md)",
    )
    o = p.add_argument_group("operations")
    o.add_argument("--metrics-host", dest="stream.metrics_host", metavar="HOST", default=None)
    o.add_argument(
        "--metrics-port",
        dest="stream.metrics_port",
        metavar="PORT",
        type=int,
        default=None,
        help="0 = a free port (logged)",
    )
    o.add_argument(
        "--max-messages",
        type=int,
        default=None,
        metavar="N",
        help="stop after N inputs, then finish, commit and exit 0 (batch jobs, benchmarks)",
    )
    o.add_argument(
        "--idle-exit-s",
        type=float,
        default=None,
        metavar="S",
        help="exit 0 after S seconds without input: drain a backlog and stop (batch jobs)",
    )
    p.set_defaults(handler=run)


def _process_count(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or 'auto', got {value!r}")
    return count


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    log = get_logger("cryptosent.serve")
    stop = stop_on_signals("exit")

    from stream.artifact import read_meta
    from stream.backends import load_backend, on_accelerator
    from stream.core.planning import prep_process_count
    from stream.serve import ServeConfig, StreamError, StreamWorker, ensure_topics
    from stream.serve.prep_pool import text_pipeline_for, usable_cpus

    config = ServeConfig.of(settings)
    # Cheap checks first, so a typo fails in a second, not after the model loaded.
    meta = read_meta(settings.model.artifact_dir)
    assets = config.asset_extractor()
    ensure_topics(config, create=bool(args.create_topics))
    backend = load_backend(settings.model, threads=settings.stream.torch_threads)
    processes = prep_process_count(
        settings.stream.prep_processes, accelerator=on_accelerator(backend), cpus=usable_cpus()
    )
    log.info(
        "serve_starting",
        settings=settings.redacted(),
        model_version=backend.model_version,
        backend=backend.name,
        asset_map_version=assets.version,
        prep_processes=processes,
    )
    # The artifact's text pipeline, whatever the backend: what was trained on is served.
    with text_pipeline_for(meta.text, processes) as text_pipeline:
        worker = StreamWorker(
            config,
            backend,
            text_pipeline,
            max_messages=args.max_messages,
            idle_exit_s=args.idle_exit_s,
            assets=assets,
        )
        try:
            worker.run(stop)
        except StreamError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0
