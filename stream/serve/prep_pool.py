"""Text cleaning in worker processes, for a serve whose model outruns one Python thread.

On a GPU the forward pass is cheap and `stream-prep` is not: cleaning (regexes, emoji names, the
English filter) is pure Python at 150-240 us/tweet on an H200 host, so one thread caps serve near
4,000 tweets/s however fast the card is (docs/performance.md). Threads cannot share that work
under the GIL; processes can. `ProcessTextPipeline` is a `TextPipelineLike`, so
`stream.core.steps.prepare` runs unchanged: each worker process rebuilds the same `TextPipeline`
from the artifact's `TextConfig`, so a text is cleaned exactly as the trainer cleaned it.

Processes are spawned, never forked: the parent holds CUDA and librdkafka threads, which a fork
would copy in an undefined state. A dead worker breaks the pool; `process_batch` then raises and
`prepare` turns that into a `FatalBatchError`, so serve stops without committing instead of
publishing half a batch.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ops.errors import UserError
from schemas.text import TextConfig
from stream.core.records import TextPipelineLike
from stream.core.text import CleanResult, TextPipeline

# Below this many texts per process, the inter-process round trip costs more than it saves.
MIN_CHUNK = 64

_worker_pipeline: TextPipeline | None = None


def _init_worker(config: TextConfig) -> None:
    global _worker_pipeline
    _worker_pipeline = TextPipeline(config)


def _clean(texts: list[str]) -> list[CleanResult]:
    assert _worker_pipeline is not None, "worker process was not initialised"
    return _worker_pipeline.process_batch(texts)


class ProcessTextPipeline:
    """`TextPipeline.process_batch` split over `processes` spawned worker processes, results in
    input order. Call `close()` (or use it as a context manager) to stop the processes."""

    def __init__(self, config: TextConfig, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, not {processes}")
        self.config = config
        self.processes = processes
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(config,),
        )
        # Start every process and load its language model now, not on the first live batch.
        try:
            list(self._pool.map(_clean, [["warm up the language filter"]] * processes))
        except BrokenProcessPool as exc:
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise UserError(
                f"the {processes} text-cleaning worker processes failed to start: {exc}",
                hint="set CRYPTOSENT_STREAM__PREP_PROCESSES=0 to clean in the serving process",
            ) from None

    def process_batch(self, texts: Sequence[str]) -> list[CleanResult]:
        texts = list(texts)
        if not texts:
            return []
        size = max(MIN_CHUNK, math.ceil(len(texts) / self.processes))
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        return [result for part in self._pool.map(_clean, chunks) for result in part]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessTextPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def usable_cpus() -> int:
    """The cores this process may run on (a cpuset or taskset narrows them), not the node's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def text_pipeline_for(config: TextConfig, processes: int) -> Iterator[TextPipelineLike]:
    """The serve text pipeline: in the prep thread (`processes` 0) or over worker processes,
    which are stopped when the block ends."""
    if processes <= 0:
        yield TextPipeline(config)
        return
    with ProcessTextPipeline(config, processes) as pipeline:
        yield pipeline
