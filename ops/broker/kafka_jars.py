"""The Apache Kafka broker's jars: fetched once from Maven Central with `mvn`, cached outside the
repository (nothing here is ever committed), and the `java` that runs them."""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ops.errors import UserError
from ops.logging import get_logger

log = get_logger(__name__)

MIN_JAVA = 17  # Kafka 4.x brokers need Java 17
# Kafka's pom brings log4j-core but no SLF4J binding (its tarball adds one): without it the
# broker's own log lines, which go through SLF4J, would vanish. Matches Kafka 4.4.0's log4j-core.
LOG4J_VERSION = "2.25.5"
# Pinned so that a fetch does not depend on whatever plugin version Maven would pick.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_COMPLETE = ".complete"

POM_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by cryptosent (ops/broker/kafka_jars.py): the Apache Kafka broker's runtime jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cryptosent.local</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def default_cache_dir(version: str) -> Path:
    return Path.home() / ".cache" / "cryptosent" / f"kafka-{version}"


def render_pom(version: str, log4j: str = LOG4J_VERSION) -> str:
    return POM_TEMPLATE.format(version=version, log4j=log4j)


def require_java() -> Path:
    """`java` on PATH, version 17 or newer, else a one-line UserError naming what to install."""
    found = shutil.which("java")
    if found is None:
        raise UserError(
            "the apache-kafka broker needs java (17 or newer) on PATH",
            hint="install a JDK, e.g. `apt-get install default-jdk-headless`, "
            "or use the embedded broker (--engine embedded)",
        )
    try:
        proc = subprocess.run(
            [found, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot run {found} -version: {exc}") from None
    major = java_major(proc.stderr + proc.stdout)
    if major is not None and major < MIN_JAVA:
        raise UserError(
            f"the apache-kafka broker needs java {MIN_JAVA} or newer; {found} is java {major}",
            hint="install a newer JDK, e.g. `apt-get install default-jdk-headless`",
        )
    return Path(found)


def java_major(version_output: str) -> int | None:
    """17 from `openjdk version "17.0.15"`, 8 from `java version "1.8.0_392"`."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    first = int(match.group(1))
    return int(match.group(2) or 0) if first == 1 else first


def require_mvn() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise UserError(
            "the apache-kafka broker's jars are not cached yet and fetching them needs mvn on PATH",
            hint="install Maven, e.g. `apt-get install maven`, "
            "or use the embedded broker (--engine embedded)",
        )
    return Path(found)


def cached_classpath(cache_dir: Path) -> str | None:
    libs = cache_dir / "libs"
    if not (libs / _COMPLETE).is_file():
        return None
    return str(libs / "*")


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """One fetch at a time per cache directory (parallel test sessions, CI warm-up)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(version: str, cache_dir: Path | None = None, timeout_s: float = 900.0) -> str:
    """The broker's classpath (`<cache>/libs/*`), fetching the jars with Maven on first use."""
    cache = cache_dir if cache_dir is not None else default_cache_dir(version)
    found = cached_classpath(cache)
    if found is not None:
        return found
    with _locked(cache):
        found = cached_classpath(cache)
        if found is not None:
            return found
        mvn = require_mvn()
        pom = cache / "pom.xml"
        pom.write_text(render_pom(version), encoding="utf-8")
        partial = cache / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        started = time.monotonic()
        log.info("kafka_jars_fetching", version=version, cache_dir=str(cache))
        cmd = [
            str(mvn),
            "-B",
            "-q",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                f"mvn did not fetch Apache Kafka {version} within {timeout_s:.0f}s",
                hint="check that Maven Central is reachable",
            ) from None
        if proc.returncode != 0:
            raise UserError(
                f"mvn could not fetch org.apache.kafka:kafka_2.13:{version}: "
                f"{_last_error(proc.stdout + proc.stderr)}",
                hint="check the version and that Maven Central is reachable",
            )
        (partial / _COMPLETE).write_text(version, encoding="utf-8")
        libs = cache / "libs"
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        log.info(
            "kafka_jars_fetched",
            version=version,
            jars=len(list(libs.glob("*.jar"))),
            seconds=round(time.monotonic() - started, 1),
        )
        return str(libs / "*")


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    picked = (errors or lines or ["no output"])[0]
    return re.sub(r"\x1b\[[0-9;]*m", "", picked)[:300]
