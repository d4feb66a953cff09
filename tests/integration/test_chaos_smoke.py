"""A small run of the chaos suite (bench/chaos.py) so regressions are caught: one kill -9 of
serve per delivery mode, and the malformed mix, on real CLI processes. The full suite is a
benchmark (`make chaos`), not a timed test; these sizes only keep it short."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from chaos_lib.broker_faults import broker_sigstop  # noqa: E402
from chaos_lib.harness import Ctx  # noqa: E402
from chaos_lib.kills import kill9  # noqa: E402
from chaos_lib.traffic import malformed_mix  # noqa: E402

from tests.tiny_model import make_tiny_artifact  # noqa: E402

# Short sessions: the embedded broker completes a group join only after about half the session
# timeout, and a killed dynamic member is evicted after a full one.
SESSION_TIMEOUT_MS = 6000


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Ctx:
    engine = str(request.config.getoption("--broker", default="embedded") or "embedded")
    engine = "apache-kafka" if engine in ("kafka", "apache-kafka") else "embedded"
    workdir = tmp_path_factory.mktemp("chaos-smoke")
    return Ctx(
        engine=engine,
        workdir=workdir,
        artifact=make_tiny_artifact(workdir / "model"),
        seed=3,
        verbose=False,
    )


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_one_kill9_loses_nothing(ctx: Ctx, guarantee: str) -> None:
    result = kill9(
        ctx,
        guarantee=guarantee,
        messages=1_500,
        kills=1,
        rate=500.0,
        static=guarantee == "exactly_once",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        name=f"smoke-{guarantee}",
    )
    assert result["kills"] == 1
    assert result["complete"], result
    assert result["lost"] == 0, result
    assert result["unexpected_records"] == 0, result
    assert result["recovery_s"] is not None, result
    if guarantee == "exactly_once" and not result["broker_limitation"]:
        # Only a broker that hides aborted records from read_committed readers can show it.
        assert result["duplicates"] == 0, result


def test_malformed_mix_one_outcome_each(ctx: Ctx) -> None:
    # Every class, the lone surrogate escape (which once crashed serve) included.
    result = malformed_mix(
        ctx, rounds=1, good_per_round=5, poison=False, session_timeout_ms=SESSION_TIMEOUT_MS
    )
    assert result["serve_alive"], result
    assert result["lost"] == 0, result
    assert result["wrong_outcomes"] == 0, result["per_class"]


def test_broker_hang_turns_readyz_not_ready_then_ready_without_a_restart(ctx: Ctx) -> None:
    # 8 s is longer than serve's broker freshness window (stream/serve/health.py, 5 s).
    result = broker_sigstop(ctx, messages=900, rate=150.0, hang_s=8.0)
    assert result["serve_alive_after"], result
    assert result["readyz_not_ready_during_hang"] > 0, result
    assert result["readyz_ready_again_after_s"] is not None, result
    assert result["lost"] == 0, result
