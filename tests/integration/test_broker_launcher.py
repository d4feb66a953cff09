"""`cryptosent broker` for the session's engine as a real process: ready means metadata answers,
SIGTERM stops it cleanly and removes its temporary data; Apache Kafka on a data directory keeps
its log across a restart (what the chaos suite's broker_restart needs)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ops.broker import ApacheKafkaBroker
from ops.kafka import create_topics, list_topics
from ops.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line (the bootstrap address) without blocking past the deadline."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    buffered = ""
    while time.monotonic() < deadline:
        chunk = proc.stdout.readline()
        buffered += chunk or ""
        if buffered.endswith("\n"):
            return buffered.strip()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no address from `cryptosent broker` (rc={proc.poll()})")


def _start_cli(engine: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CRYPTOSENT_LOG_FORMAT": "json"}
    if engine == "embedded":
        # The embedded broker never needs Java: no java on this PATH.
        env["PATH"] = str(tmp_path / "no-java")
    return subprocess.Popen(
        [sys.executable, "-m", "cryptosent", "broker", "--engine", engine],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.log").open("w"),
        text=True,
    )


def _alive(pid: int) -> bool:
    """Running, and not a zombie nobody reaped (an orphan's new parent may never wait)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_cli_broker_answers_metadata_and_stops_cleanly_on_sigterm(
    broker_engine: str, tmp_path: Path
) -> None:
    proc = _start_cli(broker_engine, tmp_path)
    try:
        bootstrap = _read_line(proc, 180)
        assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap), bootstrap
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topic = f"launcher-{uuid.uuid4().hex[:8]}"
        create_topics(kafka, [topic], partitions=2)
        assert list_topics(kafka)[topic] == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    events = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines()]
    started = next(e for e in events if e["event"] == "broker_started")
    assert any(e["event"] == "broker_stopped" for e in events)
    if broker_engine == "apache-kafka":
        workdir = Path(started["log"]).parents[1]
        assert workdir.name.startswith("cryptosent-kafka-")
        assert not workdir.exists(), f"{workdir} left behind"
        child = started["pid"]
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)


def test_kill_9_of_the_cli_does_not_orphan_the_broker(broker_engine: str, tmp_path: Path) -> None:
    proc = _start_cli(broker_engine, tmp_path)
    try:
        _read_line(proc, 180)
        events = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines()]
        child = next(e for e in events if e["event"] == "broker_started")["pid"]
        assert _alive(child)
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 60
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), f"broker {child} outlived its killed `cryptosent broker`"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _count(bootstrap: str, topic: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "count", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen, deadline = 0, time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.2):
                err = msg.error()
                if err is None:
                    seen += 1
                elif err.code() == -191:  # _PARTITION_EOF
                    return seen
        raise AssertionError(f"{topic}: no end of partition")
    finally:
        consumer.close()


def test_apache_kafka_restart_on_the_same_data_dir_keeps_the_log(
    broker_engine: str, tmp_path: Path
) -> None:
    if broker_engine != "apache-kafka":
        pytest.skip("the embedded broker stores in memory only: a restart starts empty")
    broker = ApacheKafkaBroker(data_dir=tmp_path / "kafka")
    broker.start()
    try:
        topic = f"restart-{uuid.uuid4().hex[:8]}"
        create_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), [topic], partitions=1)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for i in range(25):
            producer.produce(topic, value=str(i).encode())
        assert producer.flush(15) == 0
        before = broker.bootstrap
        broker.stop()
        assert (tmp_path / "kafka" / "data" / "meta.properties").is_file()
        broker.start()
        assert broker.bootstrap == before  # clients of the old broker find the new one
        assert _count(broker.bootstrap, topic) == 25
    finally:
        broker.stop()
    assert (tmp_path / "kafka" / "logs" / "server.log").is_file()
