"""Pretty-print a topic: sentiment records, dead letters, or whatever else is there.

A throw-away consumer: random group id, partitions assigned directly (no group join to wait for),
nothing committed. Every record is printed somehow; none can crash it. With `assets`, only the
sentiment records naming one of them are printed, each input once even when the stream fans it out
per asset (`stream.output_key`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from pydantic import ValidationError

from ops.errors import UserError
from ops.settings import KafkaSettings, OutputKey
from schemas.messages import SentimentOut
from stream.core.records import wanted

_TEXT_CHARS = 80
_RAW_CHARS = 160
_SUMMARY_EVERY = 100


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_record(value: bytes | str | None) -> tuple[str, str]:
    """(line to print, counter key) for one record value. Never raises."""
    if value is None:
        return "(null)", "null"
    raw = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return f"raw: {_one_line(raw, _RAW_CHARS)}", "raw"
    if isinstance(obj, dict) and "status" in obj and "id" in obj:
        return _format_sentiment(obj)
    if isinstance(obj, dict) and "error_kind" in obj:
        kind = str(obj.get("error_kind"))
        src = obj.get("source") if isinstance(obj.get("source"), dict) else {}
        where = f"{src.get('topic')}[{src.get('partition')}]@{src.get('offset')}" if src else "?"
        msg = _one_line(str(obj.get("error_message", "")), _TEXT_CHARS)
        return f"DEAD {kind:<15} {where}  {msg}", f"dead_letter:{kind}"
    return f"raw: {_one_line(raw, _RAW_CHARS)}", "raw"


def _format_sentiment(obj: dict[str, Any]) -> tuple[str, str]:
    status = str(obj.get("status"))
    p_pos = obj.get("p_positive")
    p_txt = f"{p_pos:.3f}" if isinstance(p_pos, int | float) else "  -  "
    text = obj.get("text")
    text_txt = _one_line(text, _TEXT_CHARS) if isinstance(text, str) else ""
    if status == "classified":
        label = str(obj.get("label"))
        key = label
    else:
        reason = str(obj.get("skip_reason"))
        label = "-"
        status = f"{status}:{reason}"
        key = f"skipped:{reason}"
    ident = _one_line(str(obj.get("id")), 24)
    assets = obj.get("assets")
    tickers = ",".join(map(str, assets)) if isinstance(assets, list) and assets else "-"
    return f"{ident:<24} {label:<8} {p_txt:>5} {status:<12} {tickers:<9} {text_txt}", key


def asset_match(
    value: bytes | None, key: bytes | None, assets: frozenset[str], output_key: OutputKey
) -> bool:
    """Whether a record is a SentimentOut naming one of `assets`, and the copy of its input to
    show (see `stream.core.records.wanted`). Never raises."""
    if value is None:
        return False
    try:
        record = SentimentOut.model_validate_json(value)
    except (ValidationError, ValueError):
        return False
    text_key = None if key is None else key.decode("utf-8", errors="replace")
    return wanted(record, text_key, assets, output_key)


@dataclass
class TailSummary:
    topic: str
    counts: Counter[str] = field(default_factory=Counter)
    # Records read but not shown (they name none of the wanted assets).
    hidden: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        parts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        line = f"tail: {self.total} records from {self.topic}" + (f" ({parts})" if parts else "")
        return line + (f", {self.hidden} of other assets hidden" if self.hidden else "")


def tail(
    kafka: KafkaSettings,
    topic: str,
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    timeout_s: float | None = None,
    read_committed: bool = False,
    assets: Iterable[str] | None = None,
    output_key: OutputKey = "tweet_id",
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> TailSummary:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    from ops.kafka import consumer_config, list_topics

    out = out or sys.stdout
    err = err or sys.stderr
    only = frozenset(a.strip().upper() for a in assets or () if a.strip())
    topics = list_topics(kafka)
    if topic not in topics:
        raise UserError(f"topic {topic} does not exist on {kafka.bootstrap_servers}")
    consumer = Consumer(
        consumer_config(
            kafka,
            f"cryptosent-tail-{uuid.uuid4().hex[:12]}",
            **{"isolation.level": "read_committed" if read_committed else "read_uncommitted"},
        )
    )
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in range(topics[topic])])
    summary = TailSummary(topic=topic)
    last = time.monotonic()
    try:
        while stop is None or not stop.is_set():
            if max_records is not None and summary.total >= max_records:
                break
            if timeout_s is not None and time.monotonic() - last >= timeout_s:
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                print(f"(consumer error: {msg.error()})", file=err)
                continue
            last = time.monotonic()
            if only and not asset_match(msg.value(), msg.key(), only, output_key):
                summary.hidden += 1
                continue
            line, key = format_record(msg.value())
            summary.counts[key] += 1
            print(line, file=out, flush=True)
            if summary.total % _SUMMARY_EVERY == 0:
                print(summary.line(), file=err, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return summary
