"""The real CLI processes (broker, serve, replay, alerts) as black boxes: started with
`python -m cryptosent ...`, their JSON log lines parsed from stderr as they arrive, each line
stamped with the wall-clock time it was read."""

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("embedded", "apache-kafka")


class ChaosError(RuntimeError):
    """A scenario could not run (a process died at start-up, a deadline passed)."""


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise ChaosError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOSENT_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    """One CLI process. `events` holds its parsed JSON log lines, each with `_t` (wall time)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.stdout_lines: list[str] = []
        self.plain_lines: list[str] = []
        self._on_event = on_event
        self._lock = threading.Lock()
        self._log = log_path.open("a", encoding="utf-8", buffering=1) if log_path else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cryptosent", *args],
            cwd=ROOT,
            env=base_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            # Own session: signals aimed at it (SIGSTOP of a broker) never reach this process.
            start_new_session=True,
        )
        self.started_at = time.time()
        self._threads = [
            threading.Thread(target=self._read_err, daemon=True),
            threading.Thread(target=self._read_out, daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            now = time.time()
            if self._log is not None:
                with contextlib.suppress(ValueError):
                    self._log.write(line)
            if not line.startswith("{"):
                with self._lock:
                    self.plain_lines = [*self.plain_lines[-19:], line.rstrip("\n")]
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            event["_t"] = now
            with self._lock:
                self.events.append(event)
                self.counts[str(event.get("event"))] += 1
            if self._on_event is not None:
                self._on_event(event)

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.stdout_lines.append(line.rstrip("\n"))

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == name]

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        wait_for(lambda: bool(self.named(name)) or not self.alive, timeout, f"{self.name}: {name}")
        found = self.named(name)
        if not found:
            raise ChaosError(f"{self.name} exited ({self.proc.returncode}) before {name!r}")
        return found[0]

    @property
    def reading(self) -> bool:
        """Whether its stderr is still being read (after it died: until the pipe is drained)."""
        return self._threads[0].is_alive()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            self.proc.send_signal(sig)

    def kill9(self) -> float:
        t = time.time()
        self.signal(signal.SIGKILL)
        self.proc.wait(30)
        return t

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.alive:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for t in self._threads:
            t.join(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def rss_mb(self) -> float | None:
        return rss_mb(self.pid)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Broker:
    """`cryptosent broker --engine E`: the bootstrap address is the first line on stdout. A
    restart reuses the port (clients keep their bootstrap list) and, where the engine keeps
    its log on disk, the data directory."""

    def __init__(self, engine: str, workdir: Path, *, persistent: bool = False) -> None:
        if engine not in ENGINES:
            raise ChaosError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        self.engine = engine
        self.workdir = workdir
        self.port = 0
        self.data_dir = workdir / "broker-data" if persistent else None
        self.proc: Proc | None = None
        self.bootstrap = ""
        self.starts = 0

    def start(self, timeout: float = 120.0) -> Broker:
        args = ["broker", "--log-format", "json", "--port", str(self.port)]
        if self.engine != "embedded":
            args += ["--engine", self.engine]
            if self.data_dir is not None:
                # Needs the launcher to keep (and reuse) its KRaft log directory.
                args += ["--data-dir", str(self.data_dir)]
        self.starts += 1
        self.proc = Proc(
            f"broker#{self.starts}", args, log_path=self.workdir / f"broker-{self.starts}.log"
        )
        proc = self.proc
        wait_for(
            lambda: bool(proc.stdout_lines) or not proc.alive,
            timeout,
            f"the {self.engine} broker's bootstrap address",
        )
        if not proc.stdout_lines:
            raise ChaosError(f"the {self.engine} broker exited with {proc.proc.returncode}")
        self.bootstrap = proc.stdout_lines[0].strip()
        self.port = int(self.bootstrap.rsplit(":", 1)[1])
        return self

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int | None:
        return None if self.proc is None else self.proc.stop(30)

    def signal_all(self, sig: signal.Signals) -> list[int]:
        """Signal the launcher and every process it started (Tansu, or a JVM), which run in
        sessions of their own, so a process-group signal would miss them."""
        assert self.proc is not None
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def serve_args(
    bootstrap: str,
    artifact: Path,
    topics: dict[str, str],
    *,
    guarantee: str = "at_least_once",
    group_id: str = "chaos",
    instance_id: str | None = None,
    batch_max_messages: int = 256,
    batch_size: int = 32,
    debug: bool = False,
) -> list[str]:
    args = [
        "serve",
        "--log-format",
        "json",
        "--bootstrap-servers",
        bootstrap,
        "--model",
        str(artifact),
        "--input-topic",
        topics["input"],
        "--output-topic",
        topics["output"],
        "--dead-letter-topic",
        topics["dead_letter"],
        "--group-id",
        group_id,
        "--processing-guarantee",
        guarantee,
        "--batch-size",
        str(batch_size),
        "--batch-max-messages",
        str(batch_max_messages),
        "--device",
        "cpu",
        "--torch-threads",
        "1",
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        "0",
    ]
    if instance_id is not None:
        args += ["--group-instance-id", instance_id]
    if debug:
        args += ["--log-level", "DEBUG"]
    return args


def replay_args(
    bootstrap: str, csv: Path, topic: str, *, rate: float, limit: int | None
) -> list[str]:
    args = [
        "replay",
        "--log-format",
        "json",
        "--bootstrap-servers",
        bootstrap,
        "--csv",
        str(csv),
        "--topic",
        topic,
        "--id-column",
        "id",
        "--rate",
        str(rate),
        "--no-progress",
    ]
    if limit is not None:
        args += ["--limit", str(limit), "--loop"]
    return args


def alerts_args(bootstrap: str, topics: dict[str, str]) -> list[str]:
    return [
        "alerts",
        "--log-format",
        "json",
        "--bootstrap-servers",
        bootstrap,
        "--output-topic",
        topics["output"],
        "--alerts-topic",
        topics["alerts"],
        "--group-id",
        "chaos-alerts",
        "--windows",
        "10,60",
        "--metrics-port",
        "0",
    ]
