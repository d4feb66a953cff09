"""A typed subscriber for downstream services: the sentiment records of the coins you trade.

    from ops.settings import load_settings
    from stream.apps.subscriber import SentimentSubscriber

    settings = load_settings()
    with SentimentSubscriber(
        settings.kafka,
        settings.topics.output,
        group_id="eth-desk",
        assets={"ETH"},
        output_key=settings.stream.output_key,
    ) as sub:
        for got in sub.records():
            trade(got.record.p_positive, got.record.assets)  # a SentimentOut
            sub.commit()  # after the work: at-least-once

It joins a consumer group (commits are explicit: `commit()` stores the position after every record
handed out so far), reads the output topic, and yields each `SentimentOut` once per input, whatever
`stream.output_key` the stream writes with: with `asset_fanout` an input arrives as one record per
asset, and only the copy keyed by the first wanted asset is kept. Records that are not a
`SentimentOut` are counted in `invalid` and skipped, never raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

from confluent_kafka import TopicPartition
from pydantic import ValidationError

from ops.kafka import ClientFactory, ConfluentClients, ConsumerClient, consumer_config
from ops.settings import KafkaSettings, OutputKey
from schemas.messages import SentimentOut
from stream.core.records import wanted


@dataclass(frozen=True, slots=True)
class Received:
    """One record: the parsed value and where it came from."""

    record: SentimentOut
    key: str | None
    topic: str
    partition: int
    offset: int


@dataclass
class SubscriberStats:
    read: int = 0
    kept: int = 0
    invalid: int = 0
    by_asset: dict[str, int] = field(default_factory=dict)


class SentimentSubscriber:
    """Subscribe to the sentiment topic, filter by asset, get parsed `SentimentOut` records.

    `assets`: tickers to keep (case-insensitive; None or empty = all). `output_key` must be the
    stream's `stream.output_key`: it says whether an input arrives as several records.
    `clients` builds the consumer (a fake in tests)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        group_id: str,
        assets: Iterable[str] | None = None,
        output_key: OutputKey = "tweet_id",
        from_beginning: bool = False,
        clients: ClientFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        wanted_assets = frozenset(a.strip().upper() for a in assets or () if a.strip())
        self.assets: frozenset[str] | None = wanted_assets or None
        self.output_key: OutputKey = output_key
        self.topic = topic
        self.stats = SubscriberStats()
        self._clock = clock
        self._next: dict[tuple[str, int], int] = {}
        reset = "earliest" if from_beginning else "latest"
        conf = consumer_config(kafka, group_id, **{"auto.offset.reset": reset})
        self._consumer: ConsumerClient = (clients or ConfluentClients()).consumer(conf)
        self._consumer.subscribe([topic])

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Received]:
        """The wanted records among what arrived within `timeout` seconds (maybe none)."""
        out: list[Received] = []
        for msg in self._consumer.consume(num_messages=max_records, timeout=timeout):
            if msg.error() is not None:
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:
                continue
            self._next[(topic, partition)] = offset + 1
            self.stats.read += 1
            value = msg.value()
            try:
                record = SentimentOut.model_validate_json(value or b"")
            except ValidationError:
                self.stats.invalid += 1
                continue
            raw_key = msg.key()
            key = None if raw_key is None else raw_key.decode("utf-8", errors="replace")
            if not wanted(record, key, self.assets, self.output_key):
                continue
            self.stats.kept += 1
            for asset in record.assets:
                self.stats.by_asset[asset] = self.stats.by_asset.get(asset, 0) + 1
            out.append(Received(record, key, topic, partition, offset))
        return out

    def records(
        self, *, idle_timeout_s: float | None = None, poll_timeout_s: float = 1.0
    ) -> Iterator[Received]:
        """Wanted records as they arrive; ends after `idle_timeout_s` without any (never, when
        None)."""
        last = self._clock()
        while True:
            batch = self.poll(poll_timeout_s)
            if batch:
                last = self._clock()
                yield from batch
            elif idle_timeout_s is not None and self._clock() - last >= idle_timeout_s:
                return

    def commit(self) -> None:
        """Commit (synchronously) the position after every record read so far, kept or not."""
        if not self._next:
            return
        parts = [TopicPartition(t, p, o) for (t, p), o in sorted(self._next.items())]
        self._consumer.commit(offsets=parts, asynchronous=False)
        self._next.clear()

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> SentimentSubscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
