"""The Apache Kafka launcher without a JVM: rendered configs, the jar cache, the one-line errors for
a missing java or mvn (fake PATHs), and the compose file's agreement with the launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ops.broker import ApacheKafkaBroker, EmbeddedBroker, make_broker, start_broker
from ops.broker.apache_kafka import (
    SINGLE_NODE_SETTINGS,
    jvm_args,
    log4j2_properties,
    new_cluster_id,
    render_properties,
    server_properties,
)
from ops.broker.kafka_jars import cached_classpath, ensure_jars, java_major, render_pom
from ops.broker.ports import free_port
from ops.errors import UserError
from ops.settings import ApacheKafkaSettings, BrokerSettings

ROOT = Path(__file__).resolve().parents[2]


def test_server_properties_are_one_kraft_node_with_single_node_replication(tmp_path: Path) -> None:
    props = server_properties("127.0.0.1", 19092, 19093, tmp_path / "data")
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    text = render_properties(props)
    assert "transaction.state.log.min.isr=1\n" in text
    assert text.count("\n") == len(props)


def test_log4j2_config_writes_to_one_file_and_jvm_is_small(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "server.log"
    text = log4j2_properties(log_file)
    assert f"appender.file.fileName = {log_file}" in text
    assert "Console" not in text
    args = jvm_args(512, tmp_path / "log4j2.properties", tmp_path / "logs")
    assert "-Xmx512m" in args
    assert f"-Dlog4j2.configurationFile={tmp_path / 'log4j2.properties'}" in args


def test_cluster_id_is_kafkas_uuid_text_form() -> None:
    ids = {new_cluster_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 22 and "=" not in i for i in ids)


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    import ops.broker.apache_kafka as launcher

    # 0xf8 encodes to "-" as the first base64url character: kafka-storage would take it for an
    # option (seen once in CI: "argument --cluster-id/-t: expected one argument").
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(launcher.uuid, "uuid4", lambda: next(drawn))
    assert new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


def test_pom_pins_the_version_and_an_slf4j_binding() -> None:
    pom = render_pom("4.4.0")
    assert "<artifactId>kafka_2.13</artifactId>\n      <version>4.4.0</version>" in pom
    assert "log4j-slf4j-impl" in pom


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("garbage", None),
    ],
)
def test_java_major(output: str, major: int | None) -> None:
    assert java_major(output) == major


def _fake_bin(directory: Path, name: str, script: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def _cli_broker(path: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": path,
        "HOME": str(cache.parent),
        "PYTHONPATH": str(ROOT),
        "CRYPTOSENT_BROKER__APACHE_KAFKA__CACHE_DIR": str(cache),
    }
    return subprocess.run(
        [sys.executable, "-m", "cryptosent", "broker", "--engine", "apache-kafka"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_java_is_one_line_naming_the_jdk(tmp_path: Path) -> None:
    result = _cli_broker(str(tmp_path / "empty-bin"), tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: the apache-kafka broker needs java")
    assert "default-jdk-headless" in result.stderr
    assert result.stdout == ""


def test_no_mvn_with_an_empty_cache_is_one_line_naming_maven(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake_bin(bin_dir, "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    result = _cli_broker(str(bin_dir), tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "needs mvn" in result.stderr
    assert "apt-get install maven" in result.stderr


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_bin(tmp_path, "java", "echo 'java version \"1.8.0_392\"' >&2")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match=r"java 17 or newer; .* is java 8"):
        ApacheKafkaBroker(cache_dir=tmp_path / "cache").start()


def test_cached_jars_need_no_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    libs = tmp_path / "cache" / "libs"
    libs.mkdir(parents=True)
    assert cached_classpath(tmp_path / "cache") is None
    (libs / ".complete").write_text("4.4.0")
    assert ensure_jars("4.4.0", tmp_path / "cache") == f"{libs}/*"


def test_failed_fetch_names_mavens_error_and_caches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bin(tmp_path / "bin", "mvn", "echo '[ERROR] Could not resolve kafka_2.13:9.9.9'; exit 1")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(UserError, match=r"kafka_2\.13:9\.9\.9: \[ERROR\] Could not resolve"):
        ensure_jars("9.9.9", tmp_path / "cache")
    assert cached_classpath(tmp_path / "cache") is None


def test_restart_reuses_the_ports_saved_in_the_data_dir(tmp_path: Path) -> None:
    saved = {"port": free_port(), "controller_port": free_port()}
    (tmp_path / "cryptosent-broker.json").write_text(
        f'{{"port": {saved["port"]}, "controller_port": {saved["controller_port"]}}}'
    )
    broker = ApacheKafkaBroker(data_dir=tmp_path)
    broker._pick_ports(tmp_path)
    assert (broker.port, broker.controller_port) == (saved["port"], saved["controller_port"])
    fresh = ApacheKafkaBroker()
    fresh._pick_ports(tmp_path / "elsewhere")
    assert fresh.port not in (0, fresh.controller_port)


def test_engine_choice() -> None:
    assert isinstance(make_broker(BrokerSettings()), EmbeddedBroker)
    kafka = make_broker(BrokerSettings(engine="apache-kafka", port=19092))
    assert isinstance(kafka, ApacheKafkaBroker)
    assert (kafka.version, kafka.port) == ("4.4.0", 19092)
    with pytest.raises(UserError, match="takes no data directory"):
        make_broker(BrokerSettings(data_dir=Path("/tmp/x")))
    with pytest.raises(UserError, match="unknown broker engine"), start_broker("redpanda"):
        pass


def test_compose_kafka_runs_the_tested_version_with_the_launchers_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    version = ApacheKafkaSettings().version
    for service in ("kafka", "topic-init"):
        assert compose["services"][service]["image"] == f"apache/kafka:{version}", service
    env = {k: str(v) for k, v in compose["services"]["kafka"]["environment"].items()}
    for key, value in SINGLE_NODE_SETTINGS.items():
        name = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(name) == value, f"{name} in docker-compose.yml should be {value}"


def test_cache_dir_defaults_outside_the_repository() -> None:
    from ops.broker.kafka_jars import default_cache_dir

    cache = default_cache_dir("4.4.0")
    assert cache.name == "kafka-4.4.0"
    assert ROOT not in cache.parents
    assert os.fspath(cache).startswith(os.fspath(Path.home()))
