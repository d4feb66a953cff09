"""docker-compose.yml validates against the compose-spec schema, and it, ops/prometheus.yml and the
Dockerfile agree with the settings tree."""

from __future__ import annotations

import copy
import os
import re
import stat
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from ops.settings import DashboardSettings, Settings, StreamSettings
from tests.deploy.manifests import SERVE_DRAIN_BOUND_S, compose_spec_schema, is_setting
from tests.deploy.manifests import setting_names as _setting_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
PROMETHEUS = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("stream", "replay", "alerts", "dashboard")
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: Any) -> str:
    """Compose's `${VAR:-default}` with nothing set in the environment."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def env_of(service: str) -> dict[str, str]:
    raw = SERVICES[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: interpolate(v) for k, v in raw.items()}


NAMES = _setting_names(Settings)


def mounts(service: str) -> list[tuple[str, str]]:
    """(source, target) of each volume entry in short syntax."""
    out = []
    for entry in SERVICES[service].get("volumes", []):
        source, target = interpolate(entry).split(":")[:2]
        out.append((source, target))
    return out


def is_within(path: str, directory: str) -> bool:
    p, d = PurePosixPath(path), PurePosixPath(directory)
    return p == d or d in p.parents


def test_services_exist() -> None:
    expected = {"kafka", "topic-init", "trainer", "stream", *APP_SERVICES, "prometheus"}
    assert expected <= set(SERVICES)


def test_kafka_is_apache_kraft_with_healthcheck() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    test = kafka["healthcheck"]["test"]
    assert test
    assert "kafka-broker-api-versions" in " ".join(test)


def gpu_devices(service: str) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = SERVICES[service]["deploy"]["resources"]["reservations"][
        "devices"
    ]
    return devices


@pytest.mark.parametrize("service", ["stream", "trainer"])
def test_gpu_reservation(service: str) -> None:
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in gpu_devices(service))


def test_stream_is_scalable_and_waits_for_kafka_and_topics() -> None:
    stream = SERVICES["stream"]
    assert "container_name" not in stream
    # A fixed host port would make the second replica fail to start.
    assert not stream.get("ports")
    assert stream["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert stream["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert "serve" in stream["command"]


def test_trainer_is_a_one_shot_profile() -> None:
    assert SERVICES["trainer"]["profiles"] == ["train"]
    assert SERVICES["trainer"]["restart"] == "no"
    assert "train" in SERVICES["trainer"]["command"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_cryptosent_variable_is_a_real_setting(service: str) -> None:
    for key in env_of(service):
        if not key.startswith("CRYPTOSENT_"):
            continue
        assert is_setting(key, NAMES), f"{service}: {key} is not a setting (see ops/settings/)"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_environment_validates(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values parse too: what the container would build at start-up."""
    env = {k: v for k, v in env_of(service).items() if k.startswith("CRYPTOSENT_")}
    if not env:
        return
    import os

    for key in [k for k in os.environ if k.startswith("CRYPTOSENT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Settings(_env_file=None)


def test_topics_agree_across_services() -> None:
    topic_keys = [k for k in env_of("stream") if k.startswith("CRYPTOSENT_TOPICS__")]
    assert topic_keys
    for service in ("topic-init", *APP_SERVICES):
        env = env_of(service)
        for key in topic_keys:
            assert env.get(key) == env_of("stream")[key], f"{service}: {key}"
        assert env["CRYPTOSENT_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    # replay names its topic on the command line: it must be the stream's input.
    command = [interpolate(c) for c in SERVICES["replay"]["command"]]
    assert command[command.index("--topic") + 1] == env_of("stream")["CRYPTOSENT_TOPICS__INPUT"]
    # topic-init creates exactly the topics the services use.
    script = SERVICES["topic-init"]["command"][0]
    for key in topic_keys:
        assert f"$${key}" in script


def test_dashboard_port_mapping_matches_its_setting() -> None:
    env = env_of("dashboard")
    port = int(env.get("CRYPTOSENT_DASHBOARD__PORT", DashboardSettings().port))
    assert env.get("CRYPTOSENT_DASHBOARD__HOST") == "0.0.0.0"  # reachable through the mapping
    container_ports = [
        int(interpolate(p).rsplit(":", 1)[1]) for p in SERVICES["dashboard"]["ports"]
    ]
    assert container_ports == [port]
    assert str(port) in " ".join(SERVICES["dashboard"]["healthcheck"]["test"])


def scrape_ports(job: str) -> list[tuple[list[str], int]]:
    [config] = [c for c in PROMETHEUS["scrape_configs"] if c["job_name"] == job]
    return [(sd["names"], int(sd["port"])) for sd in config["dns_sd_configs"]]


def test_prometheus_scrapes_every_stream_replica_on_its_metrics_port() -> None:
    env = env_of("stream")
    port = int(env.get("CRYPTOSENT_STREAM__METRICS_PORT", StreamSettings().metrics_port))
    assert port != 0, "a random metrics port cannot be scraped"
    assert env.get("CRYPTOSENT_STREAM__METRICS_HOST") == "0.0.0.0"
    assert scrape_ports("cryptosent-stream") == [(["stream"], port)]
    assert str(port) in [str(p) for p in SERVICES["stream"]["expose"]]
    assert str(port) in " ".join(SERVICES["stream"]["healthcheck"]["test"])
    alerts_port = int(env_of("alerts")["CRYPTOSENT_ALERTS__METRICS_PORT"])
    assert scrape_ports("cryptosent-alerts") == [(["alerts"], alerts_port)]
    # The compose file mounts this very file.
    assert any(t == "/etc/prometheus/prometheus.yml" for _, t in mounts("prometheus"))


def test_model_volume_is_mounted_where_the_settings_point() -> None:
    assert "models" in COMPOSE["volumes"]
    artifact = env_of("stream")["CRYPTOSENT_MODEL__ARTIFACT_DIR"]
    [(_, stream_target)] = [m for m in mounts("stream") if m[0] == "models"]
    assert is_within(artifact, stream_target)
    assert SERVICES["stream"]["volumes"][0].endswith(":ro")
    out = env_of("trainer")["CRYPTOSENT_TRAIN__OUT"]
    [(_, trainer_target)] = [m for m in mounts("trainer") if m[0] == "models"]
    assert is_within(out, trainer_target)
    assert PurePosixPath(out) == PurePosixPath(artifact), "serve reads what train writes"


def test_dockerfile_basics() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE | re.I)
    names = {alias for _, alias in stages if alias}
    assert {"runtime", "trainer"} <= names
    assert len(stages) >= 3  # multi-stage
    assert re.search(r"^ARG TORCH=", text, flags=re.MULTILINE)
    # torch is installed before the project so a pinned CUDA build wins.
    assert text.index('pip install "${TORCH}"') < text.index("pip install ./src")
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users
    assert users[-1] != "root"
    assert "models/" not in text.replace("/models", "")  # no artifacts copied in
    assert SERVICES["stream"]["build"]["target"] == "runtime"
    assert SERVICES["trainer"]["build"]["target"] == "trainer"


def compose_validator() -> jsonschema.protocols.Validator:
    schema = compose_spec_schema()
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(schema)(schema)
    return validator


def test_compose_file_validates_against_the_compose_spec() -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in compose_validator().iter_errors(COMPOSE)]
    assert not errors


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["stream"].__setitem__("stop_grace_periods", "60s"),
        lambda c: c["services"]["stream"]["depends_on"]["kafka"].update(condition="healthy"),
        lambda c: c["services"]["trainer"].__setitem__("deploy", {"resources": {"gpus": 1}}),
    ],
)
def test_the_compose_validator_rejects_a_broken_file(mutate: Any) -> None:
    broken = copy.deepcopy(COMPOSE)
    mutate(broken)
    assert list(compose_validator().iter_errors(broken))


def compose_unescape(value: str) -> str:
    """What the container receives: compose turns `$$` into `$`."""
    return value.replace("$$", "$")


def test_stream_replicas_use_static_membership_from_their_hostname(tmp_path: Path) -> None:
    """Run the stream service's entrypoint with a stand-in `cryptosent` that reports what it got."""
    stream = SERVICES["stream"]
    entrypoint = [compose_unescape(part) for part in stream["entrypoint"]]
    assert "CRYPTOSENT_STREAM__GROUP_INSTANCE_ID" in entrypoint[2]
    assert is_setting("CRYPTOSENT_STREAM__GROUP_INSTANCE_ID", NAMES)
    fake = tmp_path / "cryptosent"
    fake.write_text('#!/bin/sh\necho "$CRYPTOSENT_STREAM__GROUP_INSTANCE_ID|$*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "HOSTNAME": "3f2a9c1b7d6e"}
    out = subprocess.run(
        [*entrypoint, *stream["command"]], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "3f2a9c1b7d6e|serve"


def duration_s(value: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts
    assert "".join(n + u for n, u in parts) == value
    return sum(float(n) * units[u] for n, u in parts)


def test_stream_stop_grace_period_covers_the_drain() -> None:
    assert duration_s(SERVICES["stream"]["stop_grace_period"]) >= SERVE_DRAIN_BOUND_S
