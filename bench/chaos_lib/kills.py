"""kill -9 scenarios: one worker (at-least-once, exactly-once) and two workers in one group."""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

from chaos_lib.harness import Ctx, Harness, assigned_partitions, rounded
from chaos_lib.observe import aborted, percentile, tally, write_csv
from chaos_lib.procs import ChaosError, Proc, wait_for
from chaos_lib.read_committed_probe import probe

_START_TIMEOUT_S = 120.0


def _schedule(h: Harness, kills: int, span_s: float) -> list[float]:
    """Seeded kill moments (seconds after the replay starts) inside the middle of the stream."""
    lo, hi = 0.08 * span_s, 0.85 * span_s
    return sorted(h.rng.uniform(lo, hi) for _ in range(kills))


def _wait_until(t0: float, at: float) -> None:
    delay = t0 + at - time.time()
    if delay > 0:
        time.sleep(delay)


def _log_time(event: dict[str, Any]) -> float:
    """The time serve wrote a line (its own ISO timestamp), not when the pipe delivered it."""
    stamp = str(event.get("timestamp", "")).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return float(event["_t"])


def _txn_durations(serve: Proc) -> list[float]:
    begun = {e.get("seq"): _log_time(e) for e in serve.named("transaction_begun")}
    return [
        _log_time(e) - begun[e.get("seq")]
        for e in serve.named("transaction_committed")
        if e.get("seq") in begun
    ]


def _kill_in_transaction(h: Harness, serve: Proc, full: int) -> tuple[float, bool]:
    """Kill inside an open transaction, timed from serve's own log: `transaction_begun` (DEBUG,
    written once a batch's records are in the transactional producer) and
    `transaction_committed`. After a `transaction_begun` of a large batch, the kill comes at a
    seeded fraction (25-60 %) of this process's median begun -> committed time, minus the time
    the line took to reach us. Whether it hit an open transaction is read back from the same
    log once the killed process's pipe is drained: the transaction's `transaction_committed`
    line is missing. (The broker-side proof, aborted records seen by a read_uncommitted reader,
    is reported beside it.) No test hook is involved."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline and serve.alive:
        seen = serve.counts["transaction_begun"]
        try:
            wait_for(
                lambda seen=seen: serve.counts["transaction_begun"] > seen or not serve.alive,
                5.0,
                "a transaction_begun line",
                step=0.0005,
            )
        except ChaosError:
            continue
        last = serve.named("transaction_begun")[-1]
        durations = _txn_durations(serve)
        if int(last.get("records", 0)) < full // 2 or len(durations) < 3:
            continue
        # Transactions here take 7-190 ms (median ~15 ms on Kafka): aim early in the shorter ones.
        short = statistics.quantiles(durations, n=4)[0] if len(durations) > 3 else min(durations)
        target = _log_time(last) + h.rng.uniform(0.1, 0.4) * short
        delay = target - time.time()
        if delay < 0:
            continue  # the line came too late to hit this transaction: wait for the next
        time.sleep(delay)
        kill_t = serve.kill9()
        seq = last.get("seq")
        wait_for(lambda: not serve.reading, 10.0, "the killed worker's log to drain")
        committed = any(e.get("seq") == seq for e in serve.named("transaction_committed"))
        return kill_t, not committed
    return serve.kill9(), False


def _phases(proc: Proc, kill_t: float) -> dict[str, float | None]:
    """From the restarted worker's own log: kill -> worker_started (process start, model load)
    and worker_started -> first partition assignment (the group join)."""
    started = proc.named("worker_started")
    assigned = [e for e in proc.named("rebalance") if e.get("kind") == "assign"]
    t_start = started[0]["_t"] if started else None
    t_assign = assigned[0]["_t"] if assigned else None
    return {
        "start_s": rounded(None if t_start is None else t_start - kill_t),
        "join_s": rounded(None if t_start is None or t_assign is None else t_assign - t_start),
    }


def kill9(
    ctx: Ctx,
    *,
    guarantee: str,
    messages: int = 20_000,
    kills: int = 5,
    rate: float = 400.0,
    static: bool = True,
    session_timeout_ms: int | None = None,
    batch_max_messages: int = 128,
    name: str | None = None,
) -> dict[str, Any]:
    eos = guarantee == "exactly_once"
    name = name or ("kill9_eos" if eos else "kill9_alo")
    with Harness(ctx, name, partitions=3, uncommitted=eos) as h:
        ids = write_csv(h.dir / "input.csv", messages, ctx.seed)
        env = {}
        if session_timeout_ms is not None:
            env["CRYPTOSENT_STREAM__SESSION_TIMEOUT_MS"] = str(session_timeout_ms)
        opts: dict[str, Any] = {
            "guarantee": guarantee,
            "group_id": f"{name}-group",
            "instance_id": f"{name}-w1" if static else None,
            "batch_max_messages": batch_max_messages,
            "debug": eos,
        }
        serve = h.serve("serve", env=env, **opts)
        # The replay starts with serve, so the first kill, too, can meet a backlog.
        replay = h.replay(h.dir / "input.csv", rate=rate)
        t0 = time.time()
        serve.wait_event("rebalance", _START_TIMEOUT_S)
        span = messages / rate
        events: list[dict[str, Any]] = []
        restarted: list[Proc] = []
        for at in _schedule(h, kills, span):
            _wait_until(t0, at)
            if eos:
                # Waits for this process's own full published batch, so it also never kills
                # a worker that has not produced since its start.
                kill_t, on_line = _kill_in_transaction(h, serve, batch_max_messages)
            else:
                # Never kill a worker that has not produced since its own start: each kill
                # must hit a working process, and its recovery is measured separately.
                started = serve.started_at
                wait_for(
                    lambda s=started: h.collector.first_after(s) is not None,
                    _START_TIMEOUT_S,
                    "the restarted worker's first output",
                )
                kill_t, on_line = serve.kill9(), False
            events.append(
                {"at_s": round(kill_t - t0, 2), "kill_t": kill_t, "open_txn_by_log": on_line}
            )
            ctx.say(f"{name}: kill -9 at {kill_t - t0:.1f}s")
            serve = h.serve("serve", env=env, **opts)
            restarted.append(serve)
        wait_for(lambda: not replay.alive, span * 3 + 120, "the replay to finish")
        complete = h.collector.wait_complete(set(ids), timeout=240)
        rc = serve.stop(60)
        result: dict[str, Any] = tally(ids, h.collector.snapshot())
        prev_start = t0
        for ev, proc in zip(events, restarted, strict=True):
            first = h.collector.first_after(ev["kill_t"])
            ev["recovery_s"] = rounded(None if first is None else first - ev["kill_t"])
            ev.update(_phases(proc, ev["kill_t"]))
            if h.raw is not None:
                lo, hi = max(prev_start, ev["kill_t"] - 5), ev["kill_t"]
                gone = aborted(h.raw.snapshot(), h.collector.snapshot())
                ev["aborted_records"] = sum(1 for r in gone if lo < r.produced_s <= hi)
                # A broker that leaks aborted records to read_committed readers shows them as
                # a first copy produced just before the kill plus a redo after it.
                ev["leaked_aborted_records"] = _leaked(h.collector.snapshot(), lo, hi)
                ev["aborted_evidence"] = ev["aborted_records"] + ev["leaked_aborted_records"] > 0
                ev["inside_open_txn"] = bool(ev["open_txn_by_log"])
            prev_start = ev["kill_t"]
        recoveries = [e["recovery_s"] for e in events if e["recovery_s"] is not None]
        result.update(
            {
                "guarantee": guarantee,
                "static_membership": static,
                "rate_per_s": rate,
                "kills": len(events),
                "recovery_s": rounded(max(recoveries, default=None)),
                "recovery_s_median": rounded(percentile(recoveries, 0.5)),
                "complete": complete,
                "final_exit_code": rc,
                "kill_events": [{k: v for k, v in e.items() if k != "kill_t"} for e in events],
            }
        )
        if h.raw is not None:
            gone = aborted(h.raw.snapshot(), h.collector.snapshot())
            result["aborted_records_total"] = len(gone)
            result["kills_inside_open_txn"] = sum(1 for e in events if e.get("inside_open_txn"))
            result["kills_with_aborted_records"] = sum(
                1 for e in events if e.get("aborted_evidence")
            )
            result["aborted_without_committed_copy"] = _aborted_leak(h, gone)
            result["broker_probe"] = probe(h.broker.bootstrap)["verdict"]
            result["broker_limitation"] = result["broker_probe"] != "broker hides aborted records"
        return result


def _leaked(records: list[Any], lo: float, hi: float) -> int:
    later = {r.input_id for r in records if r.produced_s > hi}
    return sum(1 for r in records if lo < r.produced_s <= hi and r.input_id in later)


def _aborted_leak(h: Harness, gone: list[Any]) -> int:
    """Aborted records are by definition absent from the committed reader; this counts aborted
    ids that have no other (committed) copy, which would be a loss, kept apart for clarity."""
    committed_ids = {r.input_id for r in h.collector.snapshot()}
    return sum(1 for r in gone if r.input_id not in committed_ids)


def two_workers_kill(
    ctx: Ctx,
    *,
    messages: int = 20_000,
    kills: int = 3,
    rate: float = 300.0,
    partitions: int = 4,
    session_timeout_ms: int | None = None,
) -> dict[str, Any]:
    """Worker A is killed and restarted with the same group.instance.id; worker B goes on."""
    with Harness(ctx, "two_workers_kill", partitions=partitions) as h:
        ids = write_csv(h.dir / "input.csv", messages, ctx.seed)
        opts: dict[str, Any] = {"group_id": "two-workers", "batch_max_messages": 128}
        if session_timeout_ms is not None:
            opts["env"] = {"CRYPTOSENT_STREAM__SESSION_TIMEOUT_MS": str(session_timeout_ms)}
        a = h.serve("A", instance_id="chaos-worker-a", **opts)
        b = h.serve("B", instance_id="chaos-worker-b", **opts)

        def shared(a: Proc = a, b: Proc = b) -> bool:
            # Both must hold some: the first to join holds all of them for a moment, which
            # alone already covers every partition.
            pa, pb = assigned_partitions(a), assigned_partitions(b)
            return bool(pa) and bool(pb) and not pa & pb and len(pa | pb) == partitions

        wait_for(shared, _START_TIMEOUT_S, "both workers to share the partitions")
        a_parts, b_parts = assigned_partitions(a), assigned_partitions(b)
        b_rebalances_before = len(b.named("rebalance"))
        replay = h.replay(h.dir / "input.csv", rate=rate)
        t0 = time.time()
        span = messages / rate
        events: list[dict[str, Any]] = []
        restarted: list[Proc] = []
        for at in _schedule(h, kills, span):
            _wait_until(t0, at)
            started = a.started_at
            wait_for(
                lambda s=started: h.collector.first_after(s, a_parts) is not None,
                _START_TIMEOUT_S,
                "worker A's first output",
            )
            kill_t = a.kill9()
            ctx.say(f"two_workers_kill: kill -9 A at {kill_t - t0:.1f}s")
            events.append({"at_s": round(kill_t - t0, 2), "kill_t": kill_t})
            a = h.serve("A", instance_id="chaos-worker-a", **opts)
            restarted.append(a)
        wait_for(lambda: not replay.alive, span * 3 + 120, "the replay to finish")
        complete = h.collector.wait_complete(set(ids), timeout=240)
        records = h.collector.snapshot()
        for ev, proc in zip(events, restarted, strict=True):
            first = h.collector.first_after(ev["kill_t"], a_parts)
            ev["recovery_s"] = rounded(None if first is None else first - ev["kill_t"])
            ev.update(_phases(proc, ev["kill_t"]))
            ev["same_partitions_back"] = assigned_partitions(proc) == a_parts
            window = sorted(
                r.produced_s
                for r in records
                if r.source_partition in b_parts
                and ev["kill_t"] <= r.produced_s <= (first or ev["kill_t"] + 30)
            )
            ev["survivor_outputs_meanwhile"] = len(window)
        recoveries = [e["recovery_s"] for e in events if e["recovery_s"] is not None]
        result: dict[str, Any] = tally(ids, records)
        result.update(
            {
                "static_membership": True,
                "session_timeout_ms": session_timeout_ms or 45_000,
                "partitions": {"A": sorted(a_parts), "B": sorted(b_parts)},
                "kills": len(events),
                "recovery_s": rounded(max(recoveries, default=None)),
                "recovery_s_median": rounded(percentile(recoveries, 0.5)),
                "survivor_rebalances_during_kills": len(b.named("rebalance")) - b_rebalances_before,
                "survivor_alive": b.alive,
                "complete": complete,
                "kill_events": [{k: v for k, v in e.items() if k != "kill_t"} for e in events],
            }
        )
        return result
