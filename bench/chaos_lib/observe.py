"""What the scenarios measure: every record in the output and dead-letter topics, read with
`isolation.level=read_committed` (and, to prove kills inside open transactions, a second reader
with `read_uncommitted`), keyed back to the input id."""

from __future__ import annotations

import csv
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORDS = (
    "btc eth moon pump dump bull bear bullish bearish buy sell hodl rekt rally dip crash gain "
    "loss profit rocket chart support resistance breakout going up down long short today market "
    "coin token price love hate great terrible good bad"
).split()


@dataclass(frozen=True, slots=True)
class Seen:
    """One record read back: which input it answers, where it lies, when it was produced."""

    input_id: str
    topic: str
    partition: int
    offset: int
    source_partition: int
    produced_s: float  # the record's CreateTime, set by serve's producer at produce()
    kind: str  # classified / skipped:<reason> / dead_letter:<kind>


def write_csv(path: Path, n: int, seed: int, prefix: str = "c") -> list[str]:
    """A Kaggle-shape CSV with an id column; returns the ids in file order."""
    rng = random.Random(seed)
    ids = [f"{prefix}{i:06d}" for i in range(n)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "sentiment_label"])
        for tid in ids:
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 30)))
            w.writerow([tid, f"$BTC {words} #crypto", rng.choice(["Positive", "Negative"])])
    return ids


def looped_ids(ids: list[str], limit: int) -> list[str]:
    """The ids `replay --loop --limit N` sends (see stream.replay.tweet_json)."""
    out = []
    for i in range(limit):
        n_pass, row = divmod(i, len(ids))
        out.append(ids[row] if n_pass == 0 else f"{ids[row]}-loop{n_pass}")
    return out


def make_topics(bootstrap: str, partitions: int, tag: str) -> dict[str, str]:
    from ops.kafka import create_topics
    from ops.settings import KafkaSettings

    run = uuid.uuid4().hex[:8]
    topics = {
        name: f"chaos-{tag}-{name}-{run}" for name in ("input", "output", "dead_letter", "alerts")
    }
    create_topics(KafkaSettings(bootstrap_servers=bootstrap), list(topics.values()), partitions)
    return topics


def _parse(msg: Any, dead_letter_topic: str) -> Seen | None:
    value = msg.value()
    if value is None:
        return None
    try:
        body = json.loads(value)
    except ValueError:
        return None
    _, ts_ms = msg.timestamp()
    source = body.get("source") or {}
    if msg.topic() == dead_letter_topic:
        input_id = body.get("key") or ""
        kind = f"dead_letter:{body.get('error_kind')}"
    else:
        input_id = body.get("id") or ""
        status = body.get("status")
        kind = status if status == "classified" else f"skipped:{body.get('skip_reason')}"
    return Seen(
        input_id=input_id,
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        source_partition=int(source.get("partition", -1)),
        produced_s=ts_ms / 1000.0,
        kind=kind,
    )


class Collector:
    """A background reader of the output and dead-letter topics from the beginning."""

    def __init__(self, bootstrap: str, topics: dict[str, str], *, committed: bool = True) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.dead_letter_topic = topics["dead_letter"]
        self.records: list[Seen] = []
        self.last_record_at = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"chaos-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed" if committed else "read_uncommitted",
                "fetch.wait.max.ms": 100,
                "fetch.message.max.bytes": 4 * 1024 * 1024,
            }
        )
        # assign(), not subscribe(): a reader needs no group, and a join can take seconds.
        wanted = [topics["output"], topics["dead_letter"]]
        meta = self._consumer.list_topics(timeout=30)
        self._consumer.assign(
            [
                TopicPartition(t, p, OFFSET_BEGINNING)
                for t in wanted
                for p in sorted(meta.topics[t].partitions)
            ]
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self._consumer.consume(num_messages=1000, timeout=0.2)
            batch = []
            for msg in msgs:
                if msg.error() is not None:
                    continue
                seen = _parse(msg, self.dead_letter_topic)
                if seen is not None:
                    batch.append(seen)
            if batch:
                with self._lock:
                    self.records.extend(batch)
                    self.last_record_at = time.time()
        self._consumer.close()

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.records)

    def distinct_ids(self) -> int:
        with self._lock:
            return len({r.input_id for r in self.records})

    def wait_complete(self, expected: set[str], timeout: float, quiet_s: float = 3.0) -> bool:
        """Until every expected id was seen and nothing new arrived for `quiet_s` (late
        duplicates), or `timeout`. True when complete."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                seen = {r.input_id for r in self.records}
                quiet = time.time() - self.last_record_at
            if expected <= seen and quiet >= quiet_s:
                return True
            time.sleep(0.2)
        return False

    def first_after(self, t: float, partitions: set[int] | None = None) -> float | None:
        """Produce time of the first record produced after wall time `t`."""
        with self._lock:
            times = [
                r.produced_s
                for r in self.records
                if r.produced_s > t and (partitions is None or r.source_partition in partitions)
            ]
        return min(times) if times else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def tally(expected: list[str], records: list[Seen]) -> dict[str, Any]:
    counts = Counter(r.input_id for r in records)
    want = set(expected)
    lost = [i for i in expected if counts[i] == 0]
    dup_ids = [i for i in want if counts[i] > 1]
    return {
        "inputs": len(expected),
        "outputs": sum(counts[i] for i in want),
        "lost": len(lost),
        "duplicates": sum(counts[i] - 1 for i in dup_ids),
        "duplicated_ids": len(dup_ids),
        "max_copies": max((counts[i] for i in want), default=0),
        "unexpected_records": sum(c for i, c in counts.items() if i not in want),
        "lost_sample": lost[:5],
    }


def aborted(uncommitted: list[Seen], committed: list[Seen]) -> list[Seen]:
    """Records a read_uncommitted reader saw that read_committed never returns."""
    visible = {(r.topic, r.partition, r.offset) for r in committed}
    return [r for r in uncommitted if (r.topic, r.partition, r.offset) not in visible]


def readyz(port: int, timeout: float = 1.0) -> int | None:
    """The HTTP status of serve's /readyz, None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
