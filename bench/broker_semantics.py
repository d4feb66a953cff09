"""What each broker engine does with the semantics this project relies on, shown by the smallest
client calls that expose them (no cryptosent service involved):

1. transactions: are records of an aborted transaction, of a transaction a crashed producer left
   open (fenced by its successor), or of a still-open transaction visible to a read_committed
   reader?
2. watermarks: does get_watermark_offsets report low/high as the records actually read show?
3. offsets_for_times: does it return the first offset whose timestamp is >= the asked time?

    python bench/broker_semantics.py [--engines embedded,apache-kafka]

writes bench/results/broker_semantics.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from ops.broker import ENGINES, start_broker  # noqa: E402
from ops.kafka import create_topics  # noqa: E402
from ops.logging import configure_logging  # noqa: E402
from ops.settings import KafkaSettings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PARTITION_EOF = -191


def read_values(boot: str, topic: str, isolation: str, timeout: float = 20.0) -> list[str]:
    """Every value a reader with `isolation` gets from partition 0, up to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": boot,
            "group.id": f"sem-{uuid.uuid4().hex[:8]}",
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "log_level": 2,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == PARTITION_EOF:
                        return values
                    continue
                values.append((msg.value() or b"").decode())
        raise RuntimeError(f"{topic}: no end of partition within {timeout}s ({isolation})")
    finally:
        consumer.close()


def txn_producer(boot: str, txn_id: str) -> Producer:
    producer = Producer(
        {"bootstrap.servers": boot, "transactional.id": txn_id, "linger.ms": 0, "log_level": 2}
    )
    producer.init_transactions(30)
    return producer


def produce_txn(producer: Producer, topic: str, values: list[str]) -> None:
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value.encode(), partition=0)
    assert producer.flush(15) == 0


def transactions(boot: str, kafka: KafkaSettings) -> dict[str, Any]:
    topic = f"sem-txn-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, [topic], partitions=1)
    txn_id = f"sem-{uuid.uuid4().hex[:8]}"
    first = txn_producer(boot, txn_id)
    produce_txn(first, topic, ["committed-1", "committed-2"])
    first.commit_transaction(30)
    produce_txn(first, topic, ["aborted-1", "aborted-2"])
    first.abort_transaction(30)
    # A producer that dies inside a transaction: its records are on the log, the transaction
    # open. Its successor with the same transactional.id fences it, which aborts that
    # transaction: what a restarted exactly-once worker does after a kill -9.
    produce_txn(first, topic, ["crashed-1", "crashed-2"])
    successor = txn_producer(boot, txn_id)
    produce_txn(successor, topic, ["committed-3"])
    successor.commit_transaction(30)
    # Records of a transaction still open: a read_committed reader must stop before them.
    produce_txn(successor, topic, ["open-1"])
    during_open = read_values(boot, topic, "read_committed")
    successor.abort_transaction(30)
    committed = read_values(boot, topic, "read_committed")
    uncommitted = read_values(boot, topic, "read_uncommitted")
    expected = ["committed-1", "committed-2", "committed-3"]
    return {
        "read_committed": committed,
        "read_uncommitted": uncommitted,
        "read_committed_while_a_transaction_is_open": during_open,
        "expected_read_committed": expected,
        "aborted_visible_to_read_committed": any(v.startswith("aborted") for v in committed),
        "fenced_visible_to_read_committed": any(v.startswith("crashed") for v in committed),
        "open_visible_to_read_committed": "open-1" in during_open,
        "correct": committed == expected and "open-1" not in during_open,
    }


def watermarks(boot: str, kafka: KafkaSettings, n: int = 10) -> dict[str, Any]:
    topic = f"sem-wm-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": boot, "linger.ms": 0, "log_level": 2})
    for i in range(n):
        producer.produce(topic, value=f"v{i}".encode(), partition=0)
    assert producer.flush(15) == 0
    read = read_values(boot, topic, "read_uncommitted")
    consumer = Consumer({"bootstrap.servers": boot, "group.id": "sem-wm", "log_level": 2})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        cached = consumer.get_watermark_offsets(TopicPartition(topic, 0), cached=True)
    finally:
        consumer.close()
    return {
        "produced": n,
        "read": len(read),
        "low": low,
        "high": high,
        "expected": [0, n],
        "cached_without_fetch": list(cached),
        "correct": (low, high) == (0, n) and len(read) == n,
    }


def offsets_for_times(boot: str, kafka: KafkaSettings, n: int = 5) -> dict[str, Any]:
    topic = f"sem-oft-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, [topic], partitions=1)
    t0 = int(time.time() * 1000) - 60_000
    producer = Producer({"bootstrap.servers": boot, "linger.ms": 0, "log_level": 2})
    for i in range(n):
        producer.produce(topic, value=f"v{i}".encode(), partition=0, timestamp=t0 + 1000 * i)
    assert producer.flush(15) == 0
    # Asked time -> the offset Kafka's contract gives: the first record at or after it, or the
    # end (-1 from librdkafka) when there is none.
    cases = {
        "before_first": (t0 - 5000, 0),
        "exact_second": (t0 + 1000, 1),
        "between_2_and_3": (t0 + 2500, 3),
        "after_last": (t0 + 1000 * n + 5000, -1),
    }
    consumer = Consumer({"bootstrap.servers": boot, "group.id": "sem-oft", "log_level": 2})
    got: dict[str, Any] = {}
    try:
        for name, (ts, want) in cases.items():
            answer = consumer.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)[0]
            got[name] = {"asked_ms": ts - t0, "offset": answer.offset, "expected": want}
    finally:
        consumer.close()
    return {
        "cases": got,
        "correct": all(c["offset"] == c["expected"] for c in got.values()),
    }


def probe(engine: str) -> dict[str, Any]:
    started = time.monotonic()
    with start_broker(engine) as broker:
        start_s = time.monotonic() - started
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        result: dict[str, Any] = {"broker_start_s": round(start_s, 1)}
        for name, check in (
            ("transactions", transactions),
            ("watermarks", watermarks),
            ("offsets_for_times", offsets_for_times),
        ):
            try:
                result[name] = check(broker.bootstrap, kafka)
            except Exception as exc:  # a broker that cannot do it at all is a finding too
                result[name] = {"correct": False, "error": f"{type(exc).__name__}: {exc}"}
    return result


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Broker semantics: embedded (Tansu) vs Apache Kafka",
        "",
        f"{report['date']}, `python bench/broker_semantics.py`; {report['notes']}",
        "",
        "| check | " + " | ".join(report["engines"]) + " |",
        "|---|" + "---|" * len(report["engines"]),
    ]
    rows = [
        ("aborted txn records hidden from read_committed", "transactions",
         lambda r: not r.get("aborted_visible_to_read_committed", True)),
        ("fenced (crashed producer) txn records hidden", "transactions",
         lambda r: not r.get("fenced_visible_to_read_committed", True)),
        ("open txn records hidden (reader stops at LSO)", "transactions",
         lambda r: not r.get("open_visible_to_read_committed", True)),
        ("get_watermark_offsets = (0, records)", "watermarks", lambda r: r.get("correct")),
        ("offsets_for_times = first offset at/after time", "offsets_for_times",
         lambda r: r.get("correct")),
    ]  # fmt: skip
    for label, key, ok in rows:
        cells = []
        for engine in report["engines"]:
            section = report["engines"][engine][key]
            cells.append("error" if "error" in section else ("yes" if ok(section) else "**no**"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Details (what each reader got):", ""]
    for engine, result in report["engines"].items():
        lines.append(f"- **{engine}** (broker start {result['broker_start_s']} s):")
        t = result["transactions"]
        if "error" in t:
            lines.append(f"  - transactions: {t['error']}")
        else:
            lines.append(f"  - read_committed: {t['read_committed']}")
            lines.append(
                f"  - while a txn was open: {t['read_committed_while_a_transaction_is_open']}"
            )
        w = result["watermarks"]
        seen = w.get("error") or (w["low"], w["high"])
        lines.append(f"  - watermarks: {seen} for {w.get('produced')} records")
        o = result["offsets_for_times"]
        if "error" in o:
            lines.append(f"  - offsets_for_times: {o['error']}")
        else:
            pairs = ", ".join(
                f"{k}: {v['offset']} (want {v['expected']})" for k, v in o["cases"].items()
            )
            lines.append(f"  - offsets_for_times: {pairs}")
    return "\n".join(lines) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", type=Path, default=RESULTS / "broker_semantics")
    args = parser.parse_args(argv)
    configure_logging("WARNING", "console")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "notes": f"{platform.node()}, {platform.machine()}, shared and busy 2-core machine",
        "engines": {},
    }
    for engine in engines:
        report["engines"][engine] = probe(engine)
        print(engine, json.dumps(report["engines"][engine], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
