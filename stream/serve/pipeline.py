"""The two-stage thread pipeline that overlaps CPU preparation of batch N+1 with the forward
passes of batch N.

Threads: the Kafka thread (`stream.serve.worker`) submits batches and collects finished ones;
one `stream-prep` thread runs `stream.core.steps.prepare` (clean, tokenize, length-plan); one
`stream-infer` thread runs `infer` (forward passes). At most `max_in_flight` (2) batches are
inside: one preparing or prepared, one on the device. Queues are FIFO and there is a single
thread per stage, so batches come out in the order they went in, which is what lets exactly-once
commit each batch's offsets in its own transaction.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
import traceback
from collections.abc import Callable

from ops.logging import get_logger
from stream.backends.base import Backend
from stream.core import TextPipelineLike
from stream.core.assets import AssetExtractor
from stream.core.steps import Batch, infer, prepare

log = get_logger("stream.serve")

_STOP = object()
Step = Callable[[Batch], Batch]


class BatchPipeline:
    """prep thread -> infer thread, FIFO, at most `max_in_flight` batches inside.

    Stage exceptions do not kill the threads: they are attached to the batch (`batch.error`) and
    the Kafka thread decides what they mean. Each stage's wall time goes into the batch
    (`prep_seconds`, `inference_seconds`) and what a step noted is logged here.
    """

    def __init__(
        self,
        prep: Step,
        run: Step,
        max_in_flight: int = 2,
        infer_thread_init: Callable[[], None] | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self._prep_q: queue.Queue[object] = queue.Queue()
        self._infer_q: queue.Queue[object] = queue.Queue()
        self._done_q: queue.Queue[object] = queue.Queue()
        self._in_flight = 0
        self._threads = [
            threading.Thread(
                target=self._stage,
                args=(prep, "prep_seconds", self._prep_q, self._infer_q),
                name="stream-prep",
            ),
            threading.Thread(
                target=self._stage,
                args=(run, "inference_seconds", self._infer_q, self._done_q, infer_thread_init),
                name="stream-infer",
            ),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    @classmethod
    def for_backend(
        cls,
        pipeline: TextPipelineLike,
        backend: Backend,
        batch_size: int,
        threads: int | None = None,
        extractor: AssetExtractor | None = None,
    ) -> BatchPipeline:
        """The serving pipeline: `prepare` with the artifact's text pipeline (and the asset
        extractor), `infer` on the backend, whose inference thread is initialised with
        `threads`."""
        return cls(
            functools.partial(
                prepare,
                pipeline=pipeline,
                backend=backend,
                batch_size=batch_size,
                extractor=extractor,
            ),
            functools.partial(infer, backend=backend),
            max_in_flight=2,
            infer_thread_init=functools.partial(backend.init_thread, threads),
        )

    @staticmethod
    def _stage(
        fn: Step,
        timing: str,
        inbox: queue.Queue[object],
        outbox: queue.Queue[object],
        init: Callable[[], None] | None = None,
    ) -> None:
        if init is not None:
            init()
        while True:
            job = inbox.get()
            if job is _STOP:
                outbox.put(_STOP)
                return
            assert isinstance(job, Batch)
            if job.error is None:
                log.debug(
                    "batch_stage_started", stage=timing.split("_", maxsplit=1)[0], seq=job.seq
                )
                start = time.perf_counter()
                try:
                    fn(job)
                except BaseException as exc:
                    job.error = exc
                    log.error(
                        "batch_stage_failed",
                        seq=job.seq,
                        error=repr(exc),
                        trace=traceback.format_exc(limit=5),
                    )
                setattr(job, timing, time.perf_counter() - start)
                for event, fields in job.notes:
                    log.warning(event, seq=job.seq, **fields)
                job.notes.clear()
            outbox.put(job)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def can_accept(self) -> bool:
        return self._in_flight < self.max_in_flight

    def submit(self, batch: Batch) -> None:
        self._in_flight += 1
        self._prep_q.put(batch)

    def poll_done(self, timeout: float = 0.0) -> Batch | None:
        """The next finished batch, in submission order, or None."""
        if self._in_flight == 0:
            return None
        try:
            job = self._done_q.get(timeout=timeout) if timeout > 0 else self._done_q.get_nowait()
        except queue.Empty:
            return None
        if not isinstance(job, Batch):
            return None
        self._in_flight -= 1
        return job

    def close(self, timeout: float = 5.0) -> None:
        self._prep_q.put(_STOP)
        for t in self._threads:
            t.join(timeout)
