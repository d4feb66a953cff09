"""The Kafka password, given as `--sasl-password` or CRYPTOSENT_KAFKA__SASL_PASSWORD, never
appears in any line a command writes (DEBUG logs included): neither when the broker cannot be
reached nor when serve starts for real and logs its settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.broker import EmbeddedBroker
from tests.tiny_model import make_tiny_artifact

ROOT = Path(__file__).resolve().parents[2]
MARKER = "pw-MARKER-7c1f93a2"
BOGUS = "127.0.0.1:1"
SASL = [
    "--security-protocol",
    "SASL_PLAINTEXT",
    "--sasl-mechanism",
    "PLAIN",
    "--sasl-username",
    "u",
]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_artifact(tmp_path_factory.mktemp("tiny-secrets"))


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets-csv") / "one.csv"
    path.write_text("id,text,sentiment_label\na1,btc to the moon,Positive\n", encoding="utf-8")
    return path


def _env(via_env: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOSENT_")}
    env["PYTHONPATH"] = str(ROOT)
    if via_env:
        env["CRYPTOSENT_KAFKA__SASL_PASSWORD"] = MARKER
    return env


def _run(args: list[str], via_env: bool, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    password = [] if via_env else ["--sasl-password", MARKER]
    return subprocess.run(
        [sys.executable, "-m", "cryptosent", *args, "--log-level", "DEBUG", *password],
        cwd=ROOT,
        env=_env(via_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_clean(output: str, command: str) -> None:
    leaked = [line for line in output.splitlines() if MARKER in line]
    assert not leaked, f"{command} wrote the password: {leaked[:3]}"


@pytest.mark.parametrize("via_env", [False, True], ids=["flag", "env"])
@pytest.mark.parametrize("command", ["replay", "serve", "tail", "alerts"])
def test_unreachable_broker_never_logs_the_password(
    command: str, via_env: bool, artifact: Path, csv_file: Path
) -> None:
    common = ["--log-format", "json", "--bootstrap-servers", BOGUS, *SASL]
    extra: dict[str, list[str]] = {
        "replay": ["--csv", str(csv_file), "--topic", "t"],
        "serve": ["--model", str(artifact), "--metrics-port", "0"],
        "tail": ["--topic", "t", "--max", "1"],
        "alerts": [],
    }
    result = _run([command, *common, *extra[command]], via_env)
    assert result.returncode != 0, f"{command} against {BOGUS} exited 0"
    assert "error:" in result.stderr
    _assert_clean(result.stdout + result.stderr, command)


@pytest.mark.parametrize("via_env", [False, True], ids=["flag", "env"])
def test_running_serve_logs_its_settings_without_the_password(
    via_env: bool, artifact: Path, broker: EmbeddedBroker, make_topic: Callable[..., str]
) -> None:
    """PLAINTEXT to the embedded broker with a password configured: serve gets as far as
    logging its settings (`serve_starting`) and starting its clients, and then stops."""
    topics = [make_topic("sec-in"), make_topic("sec-out"), make_topic("sec-dlq")]
    password = [] if via_env else ["--sasl-password", MARKER]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cryptosent",
            "serve",
            "--log-format",
            "json",
            "--log-level",
            "DEBUG",
            "--bootstrap-servers",
            broker.bootstrap,
            "--sasl-username",
            "u",
            *password,
            "--model",
            str(artifact),
            "--input-topic",
            topics[0],
            "--output-topic",
            topics[1],
            "--dead-letter-topic",
            topics[2],
            "--metrics-port",
            "0",
        ],
        cwd=ROOT,
        env=_env(via_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    lines: list[str] = []
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            lines.append(line)
            if '"worker_started"' in line or time.monotonic() > deadline:
                break
        assert any('"serve_starting"' in line for line in lines), "".join(lines[-20:])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _assert_clean("".join(lines) + out + err, "serve")
