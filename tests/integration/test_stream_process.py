"""serve as a real process (`python -m cryptosent serve`): signals, crashes, exactly-once, startup
errors; and the replay/tail commands.

Several tests run serve through `tests.integration.slow_serve`, which wraps the model in a
`SlowBackend` (each forward pass sleeps), so that "mid-stream" is a wide, known window instead of
a race against a tiny model that finishes the topic in a second.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.settings import KafkaSettings
from schemas.text import TextConfig
from stream.artifact import read_meta
from stream.core.text import TextPipeline
from tests.integration.conftest import TANSU_READ_COMMITTED
from tests.integration.stream_helpers import (
    ROOT,
    Reader,
    ServeProcess,
    check_one_per_input,
    produce,
    tweets,
    wait_for,
)
from tests.tiny_model import make_tiny_artifact

pytestmark = pytest.mark.integration
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_artifact(tmp_path_factory.mktemp("tiny-proc"))


def serve_args(
    artifact: Path, kafka: KafkaSettings, inp: str, out: str, dlq: str, *extra: str
) -> list[str]:
    return [
        "--model",
        str(artifact),
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--input-topic",
        inp,
        "--output-topic",
        out,
        "--dead-letter-topic",
        dlq,
        "--group-id",
        f"g-{inp}",
        "--batch-size",
        "10",
        "--batch-max-messages",
        "10",
        "--linger-ms",
        "20",
        "--metrics-port",
        "0",
        "--metrics-host",
        "127.0.0.1",
        *extra,
    ]


def _interrupted_then_resumed(
    artifact: Path,
    kafka: KafkaSettings,
    make_topic: Callable[..., str],
    sig: signal.Signals,
    guarantee: str = "at_least_once",
) -> tuple[int, int]:
    """Stop serve with `sig` mid-stream, restart it until idle; returns (duplicates, rc)."""
    inp, out, dlq = make_topic("in", 2), make_topic("out"), make_topic("dlq")
    keys, values = tweets(300)
    sources = produce(kafka, inp, values, keys)
    args = serve_args(artifact, kafka, inp, out, dlq, "--processing-guarantee", guarantee)
    reader = Reader(kafka, [out, dlq])
    first = ServeProcess(args, slow_s=0.15)
    try:
        reader.until(40, 90)
        assert len(reader.records) < 250, "the stream finished before the interruption"
        first.signal(sig)
        rc = first.wait(60)
    finally:
        first.ensure_dead()
    second = ServeProcess([*args, "--idle-exit-s", "3"])
    try:
        assert second.wait(120) == 0, second.tail()
    finally:
        second.ensure_dead()
    # Both processes have exited: every output is in the topics. A killed worker logs no
    # shutdown line, so its share is only known to be whatever the restart did not redo.
    reader.settle(max(len(sources), first.acked() + second.acked()))
    duplicates = check_one_per_input(reader, sources, allow_duplicates=True)
    reader.close()
    return duplicates, rc


def test_sigterm_finishes_in_flight_work_and_restart_loses_nothing(
    artifact: Path, kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    duplicates, rc = _interrupted_then_resumed(artifact, kafka_settings, make_topic, signal.SIGTERM)
    assert rc == 0
    # Graceful: everything delivered was committed, so the restart repeats nothing.
    assert duplicates == 0


def test_kill_9_then_restart_loses_nothing_at_least_once(
    artifact: Path, kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    duplicates, rc = _interrupted_then_resumed(artifact, kafka_settings, make_topic, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    # At-least-once: outputs acknowledged after the last commit are produced again.
    print(f"at-least-once crash: {duplicates} duplicate outputs")


@pytest.mark.broker_limitation("embedded", TANSU_READ_COMMITTED)
def test_exactly_once_kill_9_then_restart_has_no_duplicates(
    artifact: Path, kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    """Tansu exposes records of ABORTED transactions to read_committed readers, so a kill inside
    the (milliseconds-long) produce+commit window would show duplicates on Tansu though not on
    Kafka. The kill is therefore placed where the worker provably holds no open transaction:
    batch k's transaction is committed and batch k+1 has entered its (slowed) forward pass, as
    serve's own debug lines say (transactions begin only after inference)."""
    inp, out, dlq = make_topic("in", 2), make_topic("out"), make_topic("dlq")
    keys, values = tweets(200)
    sources = produce(kafka_settings, inp, values, keys)
    args = serve_args(
        artifact,
        kafka_settings,
        inp,
        out,
        dlq,
        "--processing-guarantee",
        "exactly_once",
        "--log-level",
        "DEBUG",
    )
    first = ServeProcess(args, slow_s=1.0)
    killed_at: dict[str, int] = {}

    def safe_moment() -> bool:
        committed = {e["seq"] for e in first.events_named("transaction_committed")}
        sleeping = {
            e["seq"]
            for e in first.events_named("batch_stage_started")
            if e.get("stage") == "inference"
        }
        for seq in sleeping:
            if seq >= 3 and seq - 1 in committed and seq not in committed:
                first.signal(signal.SIGKILL)
                killed_at["seq"] = seq
                return True
        return first.proc.poll() is not None

    try:
        wait_for(safe_moment, 90, "a committed batch followed by one in inference", step=0.01)
        assert killed_at, f"serve exited early:\n{first.tail()}"
        assert first.wait(30) == -signal.SIGKILL
    finally:
        first.ensure_dead()
    second = ServeProcess([*args, "--idle-exit-s", "3"])
    try:
        assert second.wait(120) == 0, second.tail()
    finally:
        second.ensure_dead()
    reader = Reader(kafka_settings, [out, dlq], read_committed=True)
    reader.settle(max(len(sources), second.acked()))
    duplicates = check_one_per_input(reader, sources, allow_duplicates=True)
    assert duplicates == 0, f"{duplicates} duplicates; restarted worker's log:\n{second.tail(80)}"
    reader.close()


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptosent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_startup_errors_are_one_line_exit_2(
    artifact: Path, kafka_settings: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    inp = make_topic("in")
    common = ["--output-topic", "nope-out", "--dead-letter-topic", "nope-dlq"]
    cases = [
        (
            ["--model", str(tmp_path / "missing"), "--bootstrap-servers", "127.0.0.1:1"],
            "does not exist",
        ),
        (
            ["--model", str(artifact), "--bootstrap-servers", kafka_settings.bootstrap_servers],
            "nope-dlq, nope-out do not exist",
        ),
        (["--model", str(artifact), "--bootstrap-servers", "127.0.0.1:1"], "cannot reach Kafka"),
    ]
    for args, message in cases:
        done = _cli("serve", *args, "--input-topic", inp, *common)
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, done.stderr
        assert message in lines[0]
        assert "Traceback" not in done.stderr


def test_replay_and_tail_commands(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    csv = tmp_path / "mini.csv"
    csv.write_text(
        "message_id,created_at,text\n"
        + "".join(f"{i},2022-06-25T14:09:10Z,tweet {i}\n" for i in range(100))
        + "100,2022-06-25T14:09:10Z,\n",
        encoding="utf-8",
    )
    topic = make_topic("replay")
    boot = ["--bootstrap-servers", kafka_settings.bootstrap_servers]
    done = _cli(
        "replay", *boot, "--csv", str(csv), "--topic", topic,
        "--rate", "500", "--limit", "400", "--loop", "--keep-event-time",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"replay: sent 400 to {topic}, 1 bad rows"), summary
    rate = float(summary.split(" msg/s")[0].rsplit(" ", 1)[1])
    assert rate == pytest.approx(500, rel=0.05)
    shown = _cli("tail", *boot, "--topic", topic, "--from-beginning", "--max", "400",
                 "--timeout", "15")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert lines[-1] == f"tail: 400 records from {topic} (raw=400)"
    assert '"id": "99-loop1"' in shown.stdout
    assert '"created_at": "2022-06-25T14:09:10Z"' in lines[0]


def test_cleaning_in_worker_processes_matches_the_artifact_pipeline(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    """`--prep-processes 2`: every input gets one output, skipped or kept exactly as the
    artifact's `TextPipeline` decides in-process (the language filter runs in the workers)."""
    lang_artifact = make_tiny_artifact(tmp_path / "lang", text=TextConfig(lang_backend="py3langid"))
    foreign = (FIXTURES / "non_english_crypto.txt").read_text(encoding="utf-8").splitlines()
    raws = [
        *[line for line in foreign if line.strip()][:40],
        *[f"$ETH breaking out again &amp; 🚀 buy more https://t.co/x{i}" for i in range(40)],
        "",
        "🚀🚀",
    ]
    keys = [f"p{i}".encode() for i in range(len(raws))]
    values = [json.dumps({"id": f"p{i}", "text": t}).encode() for i, t in enumerate(raws)]
    inp, out, dlq = make_topic("in", 2), make_topic("out"), make_topic("dlq")
    sources = produce(kafka_settings, inp, values, keys)
    args = serve_args(lang_artifact, kafka_settings, inp, out, dlq)
    proc = ServeProcess([*args, "--prep-processes", "2", "--idle-exit-s", "3"])
    try:
        assert proc.wait(120) == 0, proc.tail()
    finally:
        proc.ensure_dead()
    assert proc.events_named("serve_starting")[0]["prep_processes"] == 2
    reader = Reader(kafka_settings, [out, dlq])
    reader.settle(len(sources))
    check_one_per_input(reader, sources, allow_duplicates=False)
    reader.close()
    got = {r["id"]: (r["status"], r["skip_reason"], r["language"]) for r in reader.records}
    expected = TextPipeline(read_meta(lang_artifact).text).process_batch(raws)
    want = {
        f"p{i}": (
            "classified" if res.kept and res.text else "skipped",
            res.skip_reason and res.skip_reason.value,
            res.language,
        )
        for i, res in enumerate(expected)
    }
    assert got == want
    assert sum(s == "non_english" for _, s, _ in got.values()) >= 20
