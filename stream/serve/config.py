"""The settings sections a serve worker reads, and the values derived from them."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from ops.kafka import (
    ClientFactory,
    ConsumerClient,
    ProducerClient,
    check_topics,
    consumer_config,
    create_topics,
    producer_config,
)
from ops.logging import get_logger
from ops.settings import (
    AssetsSettings,
    KafkaSettings,
    ModelSettings,
    Settings,
    StreamSettings,
    TopicsSettings,
)
from stream.core.assets import AssetExtractor, load_asset_map
from stream.core.batching import micro_batch_size
from stream.serve.delivery import AtLeastOnce
from stream.serve.health import STATS_INTERVAL_MS, Health
from stream.serve.transactions import ExactlyOnce, init_transactions

log = get_logger("stream.serve")


@dataclass(frozen=True)
class ServeConfig:
    """kafka + topics + stream + model + assets: everything `serve` reads of the settings
    tree."""

    kafka: KafkaSettings
    topics: TopicsSettings
    stream: StreamSettings
    model: ModelSettings
    assets: AssetsSettings = field(default_factory=AssetsSettings)

    @classmethod
    def of(cls, settings: Settings) -> ServeConfig:
        return cls(
            settings.kafka, settings.topics, settings.stream, settings.model, settings.assets
        )

    def asset_extractor(self) -> AssetExtractor:
        """The configured asset map, loaded and compiled once; a bad map file is a UserError."""
        return AssetExtractor(load_asset_map(self.assets.map_path))

    @property
    def exactly_once(self) -> bool:
        return self.stream.processing_guarantee == "exactly_once"

    @property
    def batch_max(self) -> int:
        return micro_batch_size(self.stream.batch_max_messages, self.model.batch_size)

    @property
    def topic_names(self) -> list[str]:
        return [*self.topics.input, self.topics.output, self.topics.dead_letter]


def transactional_id(stream: StreamSettings) -> str:
    """Stable across restarts when a group instance id is configured (a restarted worker then
    fences its dead predecessor and aborts its open transaction at once); otherwise unique per
    process, which is safe because the group generation sent with the offsets fences zombies
    (KIP-447), at the cost of a dead worker's open transaction lingering until it times out."""
    prefix = stream.transactional_id_prefix
    if stream.group_instance_id:
        return f"{prefix}-{stream.group_instance_id}"
    return f"{prefix}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def open_clients(
    config: ServeConfig,
    clients: ClientFactory,
    health: Health,
    invalidate: Callable[[], None],
) -> tuple[ConsumerClient, AtLeastOnce | ExactlyOnce]:
    """The producer (first: a broker without transactions fails before anything joins the
    group), the consumer, and the delivery guarantee that holds both."""
    s = config.stream
    txn_id = transactional_id(s) if config.exactly_once else None

    def make_producer() -> ProducerClient:
        extra: dict[str, object] = {"error_cb": health.on_client_error}
        if txn_id is not None:
            extra["transactional.id"] = txn_id
            extra["transaction.timeout.ms"] = s.transaction_timeout_ms
        producer = clients.producer(producer_config(config.kafka, **extra))
        if txn_id is not None:
            init_transactions(producer, config.kafka.bootstrap_servers)
        return producer

    producer = make_producer()
    conf = consumer_conf(config, health)
    if txn_id is not None:
        consumer = clients.consumer(conf)
        eos = ExactlyOnce(
            producer,
            make_producer,
            consumer,
            health,
            invalidate,
            dead_letter_topic=config.topics.dead_letter,
            auto_offset_reset=s.auto_offset_reset,
        )
        eos.transactional_id = txn_id
        return consumer, eos
    # The commit callback belongs to the delivery object, which needs the consumer first:
    # bound through a closure over `holder`, filled in right after.
    holder: list[AtLeastOnce] = []

    def on_commit(err: KafkaError | None, parts: list[TopicPartition]) -> None:
        holder[0].on_commit(err, parts)

    conf["on_commit"] = on_commit
    consumer = clients.consumer(conf)
    holder.append(
        AtLeastOnce(
            producer,
            consumer,
            health,
            dead_letter_topic=config.topics.dead_letter,
            commit_interval_s=s.commit_interval_ms / 1000.0,
        )
    )
    return consumer, holder[0]


def consumer_conf(config: ServeConfig, health: Health) -> dict[str, Any]:
    s = config.stream
    session = s.session_timeout_ms
    conf = consumer_config(
        config.kafka,
        s.group_id,
        **{
            "auto.offset.reset": s.auto_offset_reset,
            "session.timeout.ms": session,
            "heartbeat.interval.ms": max(100, min(3000, session // 3)),
            "max.poll.interval.ms": max(s.max_poll_interval_ms, session),
            # Only committed input: an upstream transactional producer's aborted or open
            # records are never classified.
            "isolation.level": "read_committed",
            # The broker answers a fetch as soon as data exists; this bounds the idle wait.
            "fetch.wait.max.ms": 100,
            "statistics.interval.ms": STATS_INTERVAL_MS,
            "error_cb": health.on_client_error,
            "stats_cb": health.on_stats,
        },
    )
    if s.group_instance_id:
        conf["group.instance.id"] = s.group_instance_id
    return conf


def ensure_topics(config: ServeConfig, *, create: bool) -> None:
    """Unreachable broker or missing topic -> UserError; `create` makes the missing ones."""
    if create:
        made = create_topics(
            config.kafka,
            config.topic_names,
            partitions=config.topics.partitions,
            replication_factor=config.topics.replication_factor,
        )
        if made:
            log.info("topics_created", topics=made)
    else:
        check_topics(config.kafka, config.topic_names)
