"""How fast the demo replays: below what serve holds on this machine, so that the latency it
prints is service time and not a queue behind a replay that outruns the model.

`measure_capacity` times the real work of a micro-batch (clean, tokenize, plan, forward) on a
sample of the replay stream with the loaded backend; `choose_pace` is pure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stream.backends.base import Backend
from stream.core import TextPipelineLike
from stream.core.planning import plan_batches_by_cost

# The capacity is serve's alone; in the demo the dashboard, the alert job, the output reader and
# the replay share the same cores. At half of it, a 2-core box with other load still queued
# (p50 1.1 s with 0.33 s of model time per micro-batch); a third leaves room for them.
HEADROOM = 1 / 3
# A first-time user should see the whole loop in about a minute.
MAX_REPLAY_S = 60.0
MIN_LIMIT = 100


@dataclass(frozen=True)
class Pace:
    rate: float
    limit: int
    capacity: float | None
    reason: str


def choose_pace(
    *,
    rate: float,
    limit: int,
    capacity: float | None,
    rate_set: bool,
    limit_set: bool,
    headroom: float = HEADROOM,
    max_seconds: float = MAX_REPLAY_S,
) -> Pace:
    """The replay rate and tweet count. A rate or limit the user set is kept as given; otherwise
    the rate is capped at `headroom` x `capacity` and the count at `max_seconds` of replay (never
    below MIN_LIMIT, never above the configured limit)."""
    if rate_set or not capacity:
        why = "as requested" if rate_set else "capacity unknown"
        chosen = rate
    else:
        chosen = min(rate, round(headroom * capacity, 1))
        why = (
            f"{headroom:.0%} of the {capacity:.0f} tweets/s serve holds here"
            if chosen < rate
            else f"the configured rate, under {headroom:.0%} of the {capacity:.0f} tweets/s "
            "serve holds here"
        )
    chosen = max(chosen, 0.1)
    count = limit if limit_set else min(limit, max(MIN_LIMIT, int(chosen * max_seconds)))
    return Pace(rate=chosen, limit=count, capacity=capacity, reason=why)


def measure_capacity(
    backend: Backend,
    pipeline: TextPipelineLike,
    texts: Sequence[str],
    batch_size: int,
    threads: int | None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> float | None:
    """Tweets per second of clean + tokenize + forward over `texts`, in serve's grouping, on a
    fresh thread as serve's inference thread (torch's intra-op threads are per thread). None
    when nothing could be timed. Counted serially: on a 2-core box serve's prep and inference
    threads share the cores with the broker, so their overlap is not to be relied on."""
    box: dict[str, float] = {}
    warm, timed = texts[:8], texts[8:]

    def one_pass(sample: Sequence[str]) -> None:
        cleaned = pipeline.process_batch(list(sample))
        kept = [c.text for c in cleaned if c.kept and c.text]
        if kept:
            ids = backend.encode(kept).input_ids
            lengths = [len(x) for x in ids]
            for group in plan_batches_by_cost(lengths, batch_size, backend.call_overhead_tokens):
                backend.forward_logits([ids[i] for i in group])

    def work() -> None:
        backend.init_thread(threads)
        # One-time costs (the language model's load, the first shapes) are paid before a
        # long-running worker's first message: kept out of the timing.
        one_pass(warm)
        start = clock()
        one_pass(timed)
        box["seconds"] = clock() - start

    thread = threading.Thread(target=work, name="demo-capacity", daemon=True)
    thread.start()
    thread.join()
    seconds = box.get("seconds")
    if not seconds or not timed:
        return None
    return len(timed) / seconds
