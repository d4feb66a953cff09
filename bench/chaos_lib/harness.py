"""One scenario's world: a fresh broker, uuid topics, committed (and optionally uncommitted)
readers of the outputs, and the serve processes it starts; everything is stopped at the end."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos_lib.observe import Collector, make_topics
from chaos_lib.procs import Broker, Proc, alerts_args, replay_args, serve_args


@dataclass
class Ctx:
    """What every scenario shares: the engine, a scratch directory, the model, the seed."""

    engine: str
    workdir: Path
    artifact: Path
    seed: int = 7
    verbose: bool = True

    def say(self, text: str) -> None:
        if self.verbose:
            print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Harness:
    ctx: Ctx
    name: str
    partitions: int = 3
    uncommitted: bool = False
    persistent_broker: bool = False
    broker: Broker = field(init=False)
    topics: dict[str, str] = field(init=False)
    collector: Collector = field(init=False)
    raw: Collector | None = field(init=False, default=None)
    procs: list[Proc] = field(init=False, default_factory=list)
    rng: random.Random = field(init=False)

    def __enter__(self) -> Harness:
        self.dir = self.ctx.workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(f"{self.ctx.seed}-{self.name}")
        self.broker = Broker(self.ctx.engine, self.dir, persistent=self.persistent_broker).start()
        self.ctx.say(f"{self.name}: broker {self.broker.bootstrap} ({self.ctx.engine})")
        self.topics = make_topics(self.broker.bootstrap, self.partitions, self.name)
        self.collector = Collector(self.broker.bootstrap, self.topics)
        if self.uncommitted:
            self.raw = Collector(self.broker.bootstrap, self.topics, committed=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in reversed(self.procs):
            proc.stop(20)
        self.collector.close()
        if self.raw is not None:
            self.raw.close()
        self.broker.stop()

    def serve(
        self,
        label: str,
        *,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Proc:
        n = sum(1 for p in self.procs if p.name.startswith(label)) + 1
        proc = Proc(
            f"{label}#{n}",
            serve_args(self.broker.bootstrap, self.ctx.artifact, self.topics, **kwargs),
            env=env,
            log_path=self.dir / f"{label}-{n}.log",
        )
        self.procs.append(proc)
        return proc

    def replay(self, csv: Path, *, rate: float, limit: int | None = None) -> Proc:
        proc = Proc(
            "replay",
            replay_args(self.broker.bootstrap, csv, self.topics["input"], rate=rate, limit=limit),
            log_path=self.dir / "replay.log",
        )
        self.procs.append(proc)
        return proc

    def alerts(self) -> Proc:
        proc = Proc(
            "alerts",
            alerts_args(self.broker.bootstrap, self.topics),
            log_path=self.dir / "alerts.log",
        )
        self.procs.append(proc)
        return proc


def assigned_partitions(proc: Proc) -> set[int]:
    """The input partitions a serve process holds, from its own `rebalance` log events."""
    held: set[int] = set()
    for event in proc.named("rebalance"):
        parts = {int(p.rsplit("[", 1)[1].rstrip("]")) for p in event.get("partitions", [])}
        if event.get("kind") == "assign":
            held |= parts
        else:
            held -= parts
    return held


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
