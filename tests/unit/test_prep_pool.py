"""Cleaning in worker processes (stream/serve/prep_pool.py) gives what the prep thread gives, and
the rule that decides how many processes serve starts (stream.core.planning)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from ops.errors import UserError
from ops.settings import TextSettings
from stream.core.planning import prep_process_count
from stream.core.text import TextPipeline
from stream.serve.prep_pool import (
    MIN_CHUNK,
    ProcessTextPipeline,
    text_pipeline_for,
    usable_cpus,
)
from tests.prep_golden import golden_rows, mismatches

CONFIGS = {
    "default": TextSettings(),
    "keep": TextSettings(hashtags="keep", cashtags="keep", emojis="keep", lowercase=False),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_worker_processes_clean_exactly_as_the_reference(config: str) -> None:
    rows = golden_rows()[config]
    raws = [str(r["raw"]) for r in rows]
    assert len(raws) > 3 * MIN_CHUNK  # several chunks, so both processes take a share
    with ProcessTextPipeline(CONFIGS[config], processes=2) as pool:
        results = pool.process_batch(raws)
        # Small batches (one chunk) and empty ones take the same path.
        assert pool.process_batch(raws[:5]) == results[:5]
        assert pool.process_batch([]) == []
    wrong = mismatches(config, rows, results)
    assert not wrong, wrong[:3]
    assert results == TextPipeline(CONFIGS[config]).process_batch(raws)


def test_a_closed_pool_refuses_work() -> None:
    pool = ProcessTextPipeline(TextSettings(lang_backend="none"), processes=1)
    pool.close()
    with pytest.raises(RuntimeError):
        pool.process_batch(["$ETH to the moon"])


def test_zero_processes_cleans_in_the_calling_thread() -> None:
    config = TextSettings(lang_backend="none")
    with text_pipeline_for(config, 0) as pipeline:
        assert isinstance(pipeline, TextPipeline)
        assert pipeline.config == config
    with pytest.raises(ValueError, match="processes"):
        ProcessTextPipeline(config, processes=0)


@pytest.mark.parametrize(
    ("setting", "accelerator", "cpus", "expected"),
    [
        ("auto", False, 16, 0),  # a CPU model needs the cores; cleaning is a small share there
        ("auto", True, 16, 8),  # capped: two cores stay with the Kafka and prep threads
        ("auto", True, 6, 4),
        ("auto", True, 2, 0),
        (3, False, 2, 3),  # an explicit count is kept
        (0, True, 16, 0),
    ],
)
def test_process_count(setting: int | str, accelerator: bool, cpus: int, expected: int) -> None:
    assert prep_process_count(setting, accelerator=accelerator, cpus=cpus) == expected


def test_process_count_refuses_an_unknown_word() -> None:
    with pytest.raises(ValueError, match="auto"):
        prep_process_count("many", accelerator=True, cpus=8)


def test_workers_that_cannot_start_are_one_user_error() -> None:
    # The initializer rebuilds the pipeline in each worker; a config that skipped validation
    # (model_construct) with a broken pattern makes every worker fail there.
    broken = TextSettings.model_construct(lang_backend="none", symbol_pattern="[unclosed")
    with pytest.raises(UserError, match="failed to start") as err:
        ProcessTextPipeline(broken, processes=2)
    assert err.value.hint is not None
    assert "PREP_PROCESSES=0" in err.value.hint


def test_a_dead_worker_breaks_the_batch_instead_of_losing_texts() -> None:
    # prepare() turns this error on every text into FatalBatchError: serve stops uncommitted.
    before = set(multiprocessing.active_children())
    pool = ProcessTextPipeline(TextSettings(lang_backend="none"), processes=2)
    try:
        workers = set(multiprocessing.active_children()) - before
        assert len(workers) == 2
        victim = workers.pop()
        victim.kill()
        victim.join(10)
        with pytest.raises(BrokenProcessPool):
            pool.process_batch(["$ETH holding the line"] * 200)
    finally:
        pool.close()


def test_usable_cpus_is_within_the_machine() -> None:
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
