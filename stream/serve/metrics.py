"""Prometheus metrics of `serve`, exposed by `ops.http.HealthServer` (see `stream.serve.health`).

Each worker has its own `CollectorRegistry` (never the global one) so several workers, e.g. two
in one test process or serve inside the demo, can run side by side.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

_PREFIX = "cryptosent_stream"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_INFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.consumed = Counter(f"{_PREFIX}_consumed", "Input messages consumed", registry=r)
        self.classified = Counter(
            f"{_PREFIX}_classified", "Outputs with a predicted label", ["label"], registry=r
        )
        self.skipped = Counter(
            f"{_PREFIX}_skipped", "Outputs skipped by the text pipeline", ["reason"], registry=r
        )
        self.dead_lettered = Counter(
            f"{_PREFIX}_dead_lettered", "Inputs sent to the dead-letter topic", ["kind"], registry=r
        )
        self.outputs_acked = Counter(
            f"{_PREFIX}_outputs_acked",
            "Output and dead-letter records acknowledged by the broker (committed, in EOS mode)",
            registry=r,
        )
        self.delivery_errors = Counter(
            f"{_PREFIX}_delivery_errors", "Failed deliveries (retried)", registry=r
        )
        self.commits = Counter(f"{_PREFIX}_commits", "Offset or transaction commits", registry=r)
        self.txn_aborts = Counter(
            f"{_PREFIX}_transaction_aborts", "Aborted transactions", registry=r
        )
        self.rebalances = Counter(
            f"{_PREFIX}_rebalances", "Rebalance callbacks", ["kind"], registry=r
        )
        self.batch_size = Histogram(
            f"{_PREFIX}_batch_size", "Inputs per micro-batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            f"{_PREFIX}_inference_seconds",
            "Forward-pass time per micro-batch",
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            f"{_PREFIX}_end_to_end_latency_seconds",
            "Input's Kafka timestamp (its produce time) to its output acknowledged",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            f"{_PREFIX}_consumer_lag",
            "High watermark minus position, per assigned partition (wrong on Tansu, whose "
            "watermarks count batches)",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge(f"{_PREFIX}_assigned_partitions", "Assigned partitions", registry=r)
        self.in_flight = Gauge(
            f"{_PREFIX}_in_flight_batches", "Micro-batches inside the pipeline", registry=r
        )
        self.model_loaded = Gauge(
            f"{_PREFIX}_model_loaded", "1 once the model is loaded", registry=r
        )

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out
