"""Helpers for the serve/replay/tail integration tests: produce, read back, run workers in threads
or as `python -m cryptosent serve` subprocesses, and wait on conditions with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ops.settings import KafkaSettings, Settings
from stream.backends.base import Backend
from stream.core import TextPipelineLike
from stream.serve import Counters, ServeConfig, StreamWorker

ROOT = Path(__file__).resolve().parents[2]
# Tansu takes ~20 s to complete a group join with the 45 s default session timeout.
SESSION_TIMEOUT_MS = 6000
Source = tuple[str, int, int]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    if not predicate():
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def stream_settings(
    kafka: KafkaSettings,
    inp: str,
    out: str,
    dlq: str,
    *,
    group: str,
    batch_size: int = 16,
    **stream: Any,
) -> Settings:
    return Settings(
        kafka=kafka,
        topics={"input": [inp], "output": out, "dead_letter": dlq},
        model={"batch_size": batch_size, "device": "cpu"},
        stream={
            "group_id": group,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
            "batch_linger_ms": 20,
            **stream,
        },
    )


def produce(
    kafka: KafkaSettings,
    topic: str,
    values: Iterable[bytes | None],
    keys: Iterable[bytes | None] | None = None,
    partition: int | None = None,
) -> list[Source]:
    """Produce and wait; returns each message's (topic, partition, offset) in send order."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 5})
    values = list(values)
    keys_list = list(keys) if keys is not None else [None] * len(values)
    where: list[Source | None] = [None] * len(values)

    def report(i: int) -> Callable[[Any, Any], None]:
        def cb(err: Any, msg: Any) -> None:
            assert err is None, err
            where[i] = (msg.topic(), msg.partition(), msg.offset())

        return cb

    for i, (key, value) in enumerate(zip(keys_list, values, strict=True)):
        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": report(i)}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
    assert producer.flush(30) == 0
    assert all(w is not None for w in where)
    return [w for w in where if w is not None]


def tweets(n: int, prefix: str = "t", start: int = 0) -> tuple[list[bytes], list[bytes]]:
    """(keys, values) of n valid TweetIn messages with ids prefix0..prefix{n-1}."""
    ids = [f"{prefix}{i}" for i in range(start, start + n)]
    values = [
        json.dumps({"id": i, "text": f"eth pump to the moon buy now {i}"}).encode() for i in ids
    ]
    return [i.encode() for i in ids], values


class Reader:
    """Reads topics from the beginning without a group (assign), accumulating parsed records."""

    def __init__(self, kafka: KafkaSettings, topics: list[str], *, read_committed: bool = True):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from ops.kafka import list_topics

        parts = list_topics(kafka)
        self._consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": f"reader-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                "fetch.wait.max.ms": 100,
            }
        )
        self._consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(parts[t])]
        )
        self.records: list[dict[str, Any]] = []

    def poll(self, seconds: float = 0.2) -> int:
        got = 0
        for msg in self._consumer.consume(num_messages=1000, timeout=seconds):
            value = msg.value()
            if msg.error() or value is None:
                continue
            record = json.loads(value)
            record["_topic"] = msg.topic()
            self.records.append(record)
            got += 1
        return got

    def until(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            self.poll()
        if len(self.records) < count:
            raise AssertionError(
                f"timed out after {timeout:.0f}s: {len(self.records)} of {count} records"
            )

    def settle(self, expected: int, timeout: float = 30.0) -> None:
        """Read until `expected` records, the number the writers acknowledged (their counters,
        or the shutdown log lines of stopped processes), are in; then read what is already
        queued behind them. A record the writers produced, duplicate or late, is never missed
        because the reader went quiet too early; more than `expected` shows as duplicates."""
        self.until(expected, timeout)
        while self.poll(0.5):
            pass

    def sources(self) -> Counter[Source]:
        return Counter(
            (r["source"]["topic"], r["source"]["partition"], r["source"]["offset"])
            for r in self.records
        )

    def close(self) -> None:
        self._consumer.close()


def check_one_per_input(reader: Reader, inputs: list[Source], *, allow_duplicates: bool) -> int:
    """Every input has an output; returns the number of duplicate outputs."""
    seen = reader.sources()
    missing = [s for s in inputs if s not in seen]
    assert not missing, f"{len(missing)} inputs have no output, e.g. {missing[:5]}"
    extra = set(seen) - set(inputs)
    assert not extra, f"outputs for unknown inputs: {sorted(extra)[:5]}"
    duplicates = sum(n - 1 for n in seen.values())
    if not allow_duplicates:
        assert duplicates == 0, f"{duplicates} duplicate outputs"
    return duplicates


class SlowBackend:
    """A backend whose forward passes take `delay_s` longer, so that "mid-stream" is a wide,
    known window instead of a race against a tiny model that finishes a topic in a second.
    Everything else (pipeline, device, labels, ...) is the wrapped model's."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self._inner = inner
        self.delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def forward_logits(self, batch_ids: Any) -> np.ndarray:
        time.sleep(self.delay_s)
        out: np.ndarray = self._inner.forward_logits(batch_ids)
        return out


class WorkerThread:
    """A StreamWorker running `run()` in a thread, as the demo does."""

    def __init__(
        self,
        settings: Settings,
        model: Backend,
        pipeline: TextPipelineLike | None = None,
        **kwargs: Any,
    ) -> None:
        text = pipeline if pipeline is not None else model.pipeline  # type: ignore[attr-defined]
        self.worker = StreamWorker(ServeConfig.of(settings), model, text, **kwargs)
        self.stop = threading.Event()
        self.result: Counters | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.worker.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def start(self) -> WorkerThread:
        self._thread.start()
        return self

    def join(self, timeout: float = 60.0) -> Counters:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "worker did not stop in time"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def finish(self, timeout: float = 60.0) -> Counters:
        self.stop.set()
        return self.join(timeout)


class ServeProcess:
    """`python -m cryptosent serve ...` with JSON logs parsed from stderr as they arrive;
    `slow_s` runs it through `tests.integration.slow_serve` with a `SlowBackend`."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, slow_s: float | None = None
    ) -> None:
        full_env = {
            **os.environ,
            "CRYPTOSENT_STREAM__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        entry = ["cryptosent"] if slow_s is None else ["tests.integration.slow_serve", str(slow_s)]
        cmd = [sys.executable, "-m", *entry, "serve", "--log-format", "json", *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line)
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        self.events.append(json.loads(line))

    def events_named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == name]

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        wait_for(
            lambda: bool(self.events_named(name)) or self.proc.poll() is not None,
            timeout,
            f"log event {name!r}",
        )
        found = self.events_named(name)
        assert found, f"serve exited ({self.proc.returncode}) before {name!r}:\n{self.tail()}"
        return found[0]

    def acked(self) -> int:
        """Outputs acknowledged over the process's life, from its shutdown line (0 without)."""
        return sum(int(e.get("outputs_acked", 0)) for e in self.events_named("shutdown"))

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def tail(self, n: int = 30) -> str:
        with self._lock:
            return "".join(self.lines[-n:])

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
