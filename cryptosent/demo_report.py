"""What the demo shows at the end: the live score of the output topic and the summary table."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


@dataclass
class LiveScore:
    """What the demo's output reader saw: counts, latencies and labels to score."""

    counts: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    truth: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    ids: Counter[str] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None

    @property
    def total(self) -> int:
        return sum(self.ids.values())

    def observe(self, obj: dict[str, Any], kafka_ts_ms: int | None) -> None:
        if "error_kind" in obj:
            self.counts[f"dead_letter:{obj.get('error_kind')}"] += 1
            src = obj.get("source") or {}
            self.ids[f"dlq:{src.get('topic')}:{src.get('partition')}:{src.get('offset')}"] += 1
        else:
            self.ids[str(obj.get("id"))] += 1
            if obj.get("status") == "classified":
                self.counts[f"classified:{obj.get('label')}"] += 1
                ref = obj.get("reference_label")
                if ref:
                    self.truth.append(str(ref))
                    self.predicted.append(str(obj.get("label")))
            else:
                self.counts[f"skipped:{obj.get('skip_reason')}"] += 1
            event = obj.get("event_time")
            if kafka_ts_ms and isinstance(event, str):
                with contextlib.suppress(ValueError):
                    sent_ms = datetime.fromisoformat(event).timestamp() * 1000.0
                    self.latencies_ms.append(max(0.0, kafka_ts_ms - sent_ms))
        if kafka_ts_ms:
            self.first_ms = (
                kafka_ts_ms if self.first_ms is None else min(self.first_ms, kafka_ts_ms)
            )
            self.last_ms = kafka_ts_ms if self.last_ms is None else max(self.last_ms, kafka_ts_ms)

    def summary(self) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, f1_score

        out: dict[str, Any] = {"records": self.total, "counts": dict(sorted(self.counts.items()))}
        out["duplicates"] = sum(n - 1 for n in self.ids.values() if n > 1)
        if self.first_ms is not None and self.last_ms is not None and self.last_ms > self.first_ms:
            out["throughput_per_s"] = round(self.total / ((self.last_ms - self.first_ms) / 1e3), 1)
        if self.latencies_ms:
            arr = np.asarray(self.latencies_ms)
            out["latency_ms_p50"] = round(float(np.percentile(arr, 50)), 1)
            out["latency_ms_p99"] = round(float(np.percentile(arr, 99)), 1)
        if self.truth:
            out["live_scored"] = len(self.truth)
            out["live_accuracy"] = round(float(accuracy_score(self.truth, self.predicted)), 4)
            out["live_macro_f1"] = round(
                float(f1_score(self.truth, self.predicted, average="macro", zero_division=0)), 4
            )
        return out


def service_time(metrics: Any) -> dict[str, Any]:
    """Mean forward time and size of the worker's micro-batches, from its own histograms."""

    def mean(hist: Any) -> tuple[float, float]:
        samples = next(iter(hist.collect())).samples
        count = next(x.value for x in samples if x.name.endswith("_count"))
        total = next(x.value for x in samples if x.name.endswith("_sum"))
        return float(count), float(total)

    n, seconds = mean(metrics.inference_seconds)
    batches, tweets = mean(metrics.batch_size)
    return {
        "service_ms_mean": round(1000 * seconds / n, 1) if n else None,
        "micro_batches": int(batches),
        "micro_batch_mean": round(tweets / batches, 1) if batches else None,
    }


def print_summary(summary: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo("[demo] 7. summary")
    echo(f"    model           {summary['model_version']} with {summary['backend']}")
    if summary.get("capacity_per_s"):
        echo(
            f"    pace            replayed at {summary['replay_rate_per_s']:g}/s; serve holds "
            f"~{summary['capacity_per_s']:.0f}/s here (measured before the replay)"
        )
    echo(f"    replayed        {summary['replayed']} tweets ({summary['bad_rows']} bad CSV rows)")
    echo(f"    outputs         {summary['records']} records, {summary['duplicates']} duplicates")
    for key, n in summary["counts"].items():
        echo(f"      {key:<28} {n}")
    if "throughput_per_s" in summary:
        echo(f"    throughput      {summary['throughput_per_s']} records/s (first → last output)")
    if "latency_ms_p50" in summary:
        echo(
            f"    latency         p50 {summary['latency_ms_p50']} ms, "
            f"p99 {summary['latency_ms_p99']} ms (sent → output written)"
        )
    if summary.get("service_ms_mean") is not None:
        echo(
            f"    service         {summary['service_ms_mean']} ms model time per micro-batch "
            f"(mean of {summary['micro_batches']}, {summary['micro_batch_mean']} tweets each); "
            "the rest of the latency is linger and queueing"
        )
    if "live_accuracy" in summary:
        echo(
            f"    live accuracy   {summary['live_accuracy']:.3f}, macro-F1 "
            f"{summary['live_macro_f1']:.3f} on {summary['live_scored']} labeled tweets"
        )
    echo(f"    dashboard       {summary['dashboard']}")
