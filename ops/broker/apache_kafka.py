"""A local Apache Kafka broker: one KRaft node (broker and controller in one JVM) on loopback,
run from the jars Maven fetched (see `kafka_jars`). Used by `cryptosent broker --engine
apache-kafka`, the integration and chaos suites and the stream benchmark.

With no data directory it lives in a temporary one, removed on stop. With one, the log stays on
disk and a later start on the same directory finds it, on the same ports when they are free."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ops.broker.kafka_jars import ensure_jars, require_java
from ops.broker.ports import die_with_parent_prefix, free_port, port_open
from ops.broker.process import BrokerProcess
from ops.errors import UserError
from ops.logging import get_logger

log = get_logger(__name__)

NODE_ID = 1
# What one node needs for transactions and consumer groups: Kafka's defaults (replication 3,
# min ISR 2) would leave the transaction coordinator and the group coordinator unavailable for
# ever. docker-compose.yml's kafka service sets the same values (tests/unit/test_broker_config.py).
SINGLE_NODE_SETTINGS: dict[str, str] = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    # A consumer joining an empty group gets its partitions at once, not 3 s later.
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
    # Topics are created on purpose (`--create-topics`, topic-init, the tests), never by a typo.
    "auto.create.topics.enable": "false",
}
_STATE_FILE = "cryptosent-broker.json"


def new_cluster_id() -> str:
    """Kafka's own Uuid text form: 16 random bytes, URL-safe base64 without padding. Like
    Kafka's `Uuid.randomUuid`, never one that starts with "-": `kafka-storage format -t -abc`
    reads it as an option and fails (1 start in 64 did, before this)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def server_properties(host: str, port: int, controller_port: int, log_dir: Path) -> dict[str, str]:
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        **SINGLE_NODE_SETTINGS,
    }


def render_properties(props: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items())


def log4j2_properties(log_file: Path) -> str:
    """The broker's own logs go to one file, not to the terminal or the test output."""
    return (
        "status = warn\n"
        "appender.file.type = File\n"
        "appender.file.name = FILE\n"
        f"appender.file.fileName = {log_file}\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.file.ref = FILE\n"
    )


def jvm_args(heap_mb: int, log4j_config: Path, log_dir: Path) -> list[str]:
    return [
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 128)}m",
        # Fewer GC threads than G1 on a 2-core box shared with the tests; pauses are small at
        # this heap size.
        "-XX:+UseSerialGC",
        # C1 only: on a 2-core box shared with the tests, C2's compile threads roughly doubled
        # the time to ready (median of 4 starts: 19 s -> 11 s under load) and keep competing for
        # CPU afterwards; a test broker never runs long enough for C2 to pay that back.
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j_config}",
        f"-Dkafka.logs.dir={log_dir}",
    ]


@dataclass
class ApacheKafkaBroker(BrokerProcess):
    """A local Apache Kafka process. Use as a context manager; `bootstrap` is `host:port`.
    `stop()` then `start()` restarts it on the same ports (and, with `data_dir`, the same log)."""

    version: str = "4.4.0"
    cache_dir: Path | None = None
    data_dir: Path | None = None
    heap_mb: int = 512
    startup_timeout_s: float = 120.0
    controller_port: int = 0
    # SIGTERM the broker when the process that started it dies (see die_with_parent_prefix).
    die_with_parent: bool = False
    engine = "apache-kafka"
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _stdout: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path | None:
        return None if self._workdir is None else self._workdir / "logs" / "server.log"

    def start(self) -> ApacheKafkaBroker:
        java = require_java()
        classpath = ensure_jars(self.version, self.cache_dir)
        work = self._prepare_workdir()
        self._pick_ports(work)
        logs = work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        config = work / "server.properties"
        config.write_text(
            render_properties(
                server_properties(self.host, self.port, self.controller_port, work / "data")
            ),
            encoding="utf-8",
        )
        log4j = work / "log4j2.properties"
        log4j.write_text(log4j2_properties(logs / "server.log"), encoding="utf-8")
        (work / _STATE_FILE).write_text(
            json.dumps({"port": self.port, "controller_port": self.controller_port}),
            encoding="utf-8",
        )
        base = [str(java), *jvm_args(self.heap_mb, log4j, logs), "-cp", classpath]
        started = time.monotonic()
        if not (work / "data" / "meta.properties").is_file():
            self._format(base, config)
        formatted = time.monotonic()
        guard = die_with_parent_prefix() if self.die_with_parent else []
        self._stdout = (logs / "stdout.log").open("ab")
        self._proc = subprocess.Popen(
            [*guard, *base, "kafka.Kafka", str(config)],
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own process group: a Ctrl-C aimed at the CLI is handled by us, not delivered twice.
            start_new_session=True,
        )
        self._wait_ready(time.monotonic() + self.startup_timeout_s)
        log.info(
            "broker_started",
            engine=self.engine,
            bootstrap=self.bootstrap,
            pid=self._proc.pid,
            seconds=round(time.monotonic() - started, 1),
            format_s=round(formatted - started, 1),
            log=str(self.log_path),
        )
        return self

    def _prepare_workdir(self) -> Path:
        if self._workdir is not None and self._workdir.is_dir():
            return self._workdir
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._workdir = self.data_dir
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="cryptosent-kafka-"))
        return self._workdir

    def _pick_ports(self, work: Path) -> None:
        """Ports given win; else the ones an earlier run on this directory used, when free (so
        clients of a restarted broker find it again); else free ones."""
        saved: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads((work / _STATE_FILE).read_text(encoding="utf-8"))
        for name in ("port", "controller_port"):
            chosen = int(getattr(self, name))
            if chosen == 0:
                previous = int(saved.get(name, 0))
                free = previous != 0 and not port_open(self.host, previous)
                chosen = previous if free else free_port(self.host)
            elif port_open(self.host, chosen):
                raise UserError(
                    f"port {chosen} on {self.host} is already in use",
                    hint="pick another --port or 0 for a free one",
                )
            setattr(self, name, chosen)

    def _format(self, base: list[str], config: Path) -> None:
        cmd = [
            *base,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(config),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.startup_timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            self._cleanup()
            raise UserError(
                f"formatting the Kafka storage took over {self.startup_timeout_s:.0f}s"
            ) from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            self._cleanup()
            raise UserError(f"could not format the Kafka storage directory: {tail[0][:300]}")

    def _wait_ready(self, deadline: float) -> None:
        """Ready means the broker answers metadata and lists itself, not merely an open port."""
        from ops.kafka import admin_client
        from ops.settings import KafkaSettings

        assert self._proc is not None
        admin = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                reason = self._log_error()
                self.stop()
                raise UserError(f"Apache Kafka exited at start-up: {reason}")
            if port_open(self.host, self.port):
                if admin is None:
                    admin = admin_client(KafkaSettings(bootstrap_servers=self.bootstrap))
                with contextlib.suppress(Exception):
                    if NODE_ID in admin.list_topics(timeout=1.0).brokers:
                        return
            time.sleep(0.1)
        self.stop()
        raise UserError(
            f"Apache Kafka did not answer metadata within {self.startup_timeout_s:.0f}s "
            f"on {self.bootstrap}",
            hint="raise broker.apache_kafka.startup_timeout_s on a slow machine",
        )

    def _log_error(self) -> str:
        lines: list[str] = []
        for name in ("server.log", "stdout.log"):
            path = self._workdir / "logs" / name if self._workdir else None
            if path is not None and path.is_file():
                lines += path.read_text(errors="replace").splitlines()
        picked = [line for line in lines if "ERROR" in line or "Exception" in line] or lines
        return picked[-1][:300] if picked else "no output"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Kafka's controlled shutdown), SIGKILL after `timeout`; a temporary directory
        is removed, a given data directory kept."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("broker_kill", engine=self.engine, after_s=timeout)
                proc.kill()
                proc.wait(timeout=timeout)
            log.info("broker_stopped", engine=self.engine, bootstrap=self.bootstrap)
        if self._stdout is not None:
            with contextlib.suppress(OSError):
                self._stdout.close()
            self._stdout = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self.data_dir is None and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
