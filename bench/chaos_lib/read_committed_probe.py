"""Minimal probe: does a broker hide aborted transactional records from read_committed readers?

    python bench/chaos_lib/read_committed_probe.py [BOOTSTRAP]   # default: a fresh embedded broker

One transactional producer writes 5 records and aborts, then 5 records and commits. A correct
broker shows a read_committed reader the 5 committed records only (and a read_uncommitted reader
all 10). A second case leaves a transaction open in a killed process (its records flushed) and
fences it with a new producer of the same transactional.id, which must abort it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

_CHILD = """
import sys, time
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": sys.argv[3]})
p.init_transactions(30)
p.begin_transaction()
for i in range(5):
    p.produce(sys.argv[2], value=f"open-{i}".encode())
p.flush(10)
print("open", flush=True)
time.sleep(600)
"""


def read_all(bootstrap: str, topic: str, isolation: str, settle_s: float = 3.0) -> list[str]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    # assign(), not subscribe(): no group join to wait for.
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[str] = []
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None and m.value() is not None:
            out.append(m.value().decode())
            deadline = max(deadline, time.monotonic() + 1.0)
    c.close()
    return out


def probe(bootstrap: str) -> dict[str, object]:
    topic = f"probe-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"probe-{topic}"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, value=f"aborted-{i}".encode())
    p.flush(10)
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, value=f"committed-{i}".encode())
    p.commit_transaction(30)
    # An open transaction in a process killed with SIGKILL, then fenced by its successor.
    txn_id = f"probe-killed-{topic}"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, bootstrap, topic, txn_id], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "open"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    heir = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id})
    heir.init_transactions(60)  # fences the dead producer and aborts its open transaction
    heir.begin_transaction()
    heir.produce(topic, value=b"heir-0")
    heir.commit_transaction(30)
    committed = read_all(bootstrap, topic, "read_committed")
    uncommitted = read_all(bootstrap, topic, "read_uncommitted")
    leaked = [v for v in committed if v.startswith(("aborted", "open"))]
    return {
        "read_committed": committed,
        "read_uncommitted_count": len(uncommitted),
        "aborted_visible_to_read_committed": leaked,
        "verdict": "broker hides aborted records" if not leaked else "BROKER LEAKS ABORTED RECORDS",
    }


def main() -> int:
    if len(sys.argv) > 1:
        print(probe(sys.argv[1]))
        return 0
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    from ops.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        print(probe(broker.bootstrap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
