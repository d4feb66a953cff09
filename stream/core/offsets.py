"""Which input offsets are safe to commit: at-least-once's tracker and exactly-once's per-batch
offsets. Pure bookkeeping over (topic, partition) keys."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

TopicPartitionKey = tuple[str, int]


class HasOffset(Protocol):
    @property
    def tp(self) -> TopicPartitionKey: ...
    @property
    def offset(self) -> int: ...


@dataclass
class _PartitionState:
    order: deque[int] = field(default_factory=deque)
    done: dict[int, bool] = field(default_factory=dict)
    last_tracked: int = -1
    safe: int | None = None  # next offset to commit: every input before it has an acked output
    committed: int | None = None


class OffsetTracker:
    """Per partition, the consumed offsets in consumption order and which of them have their
    output acknowledged by the broker. The commit position only ever moves over a contiguous
    prefix of acknowledged inputs, so a crash can repeat work but never skip it.

    Acks may arrive in any order (outputs go to other partitions, retries reorder them); offsets
    may have gaps (compaction, transaction markers): only consumed offsets are waited for.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, _PartitionState] = {}

    def track(self, tp: TopicPartitionKey, offset: int) -> None:
        state = self._parts.setdefault(tp, _PartitionState())
        if offset <= state.last_tracked:
            # A rewind (seek, or a re-assignment that restarts from the committed offset):
            # older pending entries would otherwise block the prefix forever.
            state.order.clear()
            state.done.clear()
        state.order.append(offset)
        state.done[offset] = False
        state.last_tracked = offset

    def ack(self, tp: TopicPartitionKey, offset: int) -> bool:
        """Mark one input's output as delivered. False when the partition or offset is no longer
        tracked (revoked, rewound): such a late ack is ignored."""
        state = self._parts.get(tp)
        if state is None or offset not in state.done:
            return False
        state.done[offset] = True
        order, done = state.order, state.done
        while order and done[order[0]]:
            head = order.popleft()
            del done[head]
            state.safe = head + 1
        return True

    def safe_offset(self, tp: TopicPartitionKey) -> int | None:
        state = self._parts.get(tp)
        return None if state is None else state.safe

    def pending(self, tp: TopicPartitionKey | None = None) -> int:
        if tp is not None:
            state = self._parts.get(tp)
            return 0 if state is None else len(state.order)
        return sum(len(s.order) for s in self._parts.values())

    def committable(
        self, tps: Iterable[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, int]:
        """Safe offsets that moved past what was last committed."""
        wanted = self._parts.keys() if tps is None else [tp for tp in tps if tp in self._parts]
        out: dict[TopicPartitionKey, int] = {}
        for tp in wanted:
            state = self._parts[tp]
            if state.safe is not None and (state.committed is None or state.safe > state.committed):
                out[tp] = state.safe
        return out

    def mark_committed(self, offsets: dict[TopicPartitionKey, int]) -> None:
        for tp, offset in offsets.items():
            state = self._parts.get(tp)
            if state is not None and (state.committed is None or offset > state.committed):
                state.committed = offset

    def uncommit(self, tps: Iterable[TopicPartitionKey]) -> None:
        """Forget what was last committed (an asynchronous commit failed), so it is retried."""
        for tp in tps:
            state = self._parts.get(tp)
            if state is not None:
                state.committed = None

    def revoke(self, tps: Iterable[TopicPartitionKey]) -> None:
        """Forget partitions: their undelivered inputs are redelivered to the next owner."""
        for tp in tps:
            self._parts.pop(tp, None)

    def clear(self) -> None:
        self._parts.clear()

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._parts)

    def last_tracked(self, tp: TopicPartitionKey) -> int | None:
        state = self._parts.get(tp)
        return None if state is None or state.last_tracked < 0 else state.last_tracked


def batch_offsets(items: Iterable[HasOffset]) -> dict[TopicPartitionKey, int]:
    """Per partition the next offset to consume after these items (for a transaction commit)."""
    out: dict[TopicPartitionKey, int] = {}
    for item in items:
        nxt = item.offset + 1
        if out.get(item.tp, -1) < nxt:
            out[item.tp] = nxt
    return out
