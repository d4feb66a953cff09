"""The typed Kafka edge: what the stream needs of a consumer and a producer, as Protocols the
confluent-kafka clients satisfy (and fakes or fault-injecting wrappers can), a factory that builds
the real ones, and the few librdkafka conventions interpreted in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, overload

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

DeliveryCallback = Callable[[KafkaError | None, Message], None]
RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class ConsumerClient(Protocol):
    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = ...,
        on_revoke: RebalanceCallback | None = ...,
        on_lost: RebalanceCallback | None = ...,
    ) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Message]: ...
    @overload
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = ...
    ) -> None: ...
    @overload
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...
    def committed(
        self, partitions: list[TopicPartition], timeout: float = ...
    ) -> list[TopicPartition]: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = ..., cached: bool = ...
    ) -> tuple[int, int]: ...
    def consumer_group_metadata(self) -> Any: ...
    def close(self) -> None: ...


class ProducerClient(Protocol):
    def produce(
        self,
        topic: str,
        value: str | bytes | None = ...,
        *,
        key: str | bytes | None = ...,
        on_delivery: DeliveryCallback | None = ...,
    ) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def init_transactions(self, timeout: float = ...) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = ...
    ) -> None: ...
    def commit_transaction(self, timeout: float = ...) -> None: ...
    def abort_transaction(self, timeout: float = ...) -> None: ...


class ClientFactory(Protocol):
    """Builds the clients of a worker. The seam for fault injection (chaos tests, a producer
    whose commit fails) without test hooks in the worker."""

    def consumer(self, conf: dict[str, Any]) -> ConsumerClient: ...
    def producer(self, conf: dict[str, Any]) -> ProducerClient: ...


class ConfluentClients:
    def consumer(self, conf: dict[str, Any]) -> ConsumerClient:
        return Consumer(conf)

    def producer(self, conf: dict[str, Any]) -> ProducerClient:
        return Producer(conf)


def message_timestamp_ms(msg: Message) -> int | None:
    """The message's Kafka timestamp in ms, None when the broker gave none."""
    ts_type, ts_ms = msg.timestamp()
    return ts_ms if ts_type != TIMESTAMP_NOT_AVAILABLE and ts_ms >= 0 else None


def is_partition_eof(err: KafkaError) -> bool:
    """End of a partition: an event, not an error (only with enable.partition.eof)."""
    return err.code() == KafkaError._PARTITION_EOF


def is_all_brokers_down(err: KafkaError) -> bool:
    return err.code() == KafkaError._ALL_BROKERS_DOWN


def is_too_large(exc: KafkaException) -> bool:
    """The producer refused a record over its message.max.bytes."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE


def kafka_error(exc: KafkaException) -> KafkaError:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return err
    return KafkaError(KafkaError._FAIL, str(err))


def produce(
    producer: ProducerClient,
    topic: str,
    value: bytes,
    key: bytes | None,
    on_delivery: DeliveryCallback | None = None,
) -> None:
    """Enqueue one record. A full local queue (BufferError) is waited out by serving delivery
    reports, which is what empties it; any other failure raises KafkaException."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)
