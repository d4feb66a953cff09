"""`serve`: the Kafka shell around `stream.core`. `StreamWorker` (worker.py) composes the thread
pipeline, the delivery guarantee (delivery.py or transactions.py), partition ownership
(rebalance.py) and health (health.py, metrics.py)."""

from stream.serve.config import ServeConfig, ensure_topics
from stream.serve.delivery import StreamError
from stream.serve.health import Counters
from stream.serve.worker import StreamWorker

__all__ = ["Counters", "ServeConfig", "StreamError", "StreamWorker", "ensure_topics"]
