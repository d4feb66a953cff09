"""librdkafka configurations for producers and consumers, from the `kafka` settings section."""

from __future__ import annotations

from typing import Any

from ops.settings import KafkaSettings


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = kafka.client_config()
    # Idempotence makes librdkafka's retries safe: no duplicates or reordering per partition.
    conf.setdefault("enable.idempotence", True)
    conf.setdefault("acks", "all")
    conf.setdefault("linger.ms", 5)
    conf.update(overrides)
    return conf


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    conf = kafka.client_config()
    conf.update(
        {
            "group.id": group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )
    conf.update(overrides)
    return conf
