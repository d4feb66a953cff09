"""Admin calls: reachability, topic listing, checking and creation. Failures are one-line
`UserError`s, never a hang or a traceback."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ops.errors import UserError
from ops.settings import KafkaSettings


def _describe(exc: Exception) -> str:
    err = exc.args[0] if exc.args else exc
    text = err.str() if hasattr(err, "str") else str(err)
    return str(text)


def admin_client(kafka: KafkaSettings) -> AdminClient:
    conf = kafka.client_config()
    # Admin calls surface their failures as exceptions, which become one clear line; librdkafka's
    # own connection-refused chatter on stderr would only bury it.
    conf.setdefault("log_level", 2)
    return AdminClient(conf)


def list_topics(kafka: KafkaSettings, timeout: float = 5.0) -> dict[str, int]:
    """Topic name -> partition count. An unreachable broker is a UserError, not a hang."""
    admin = admin_client(kafka)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise UserError(
            f"cannot reach Kafka at {kafka.bootstrap_servers}: {_describe(exc)}",
            hint="start one with `cryptosent broker` or pass --bootstrap-servers",
        ) from None
    return {name: len(t.partitions) for name, t in metadata.topics.items()}


def check_topics(kafka: KafkaSettings, names: Iterable[str], timeout: float = 5.0) -> None:
    existing = list_topics(kafka, timeout)
    missing = sorted(set(names) - set(existing))
    if missing:
        raise UserError(
            f"topic(s) {', '.join(missing)} do not exist on {kafka.bootstrap_servers}",
            hint="create them or pass --create-topics",
        )


def create_topics(
    kafka: KafkaSettings,
    names: Iterable[str],
    partitions: int = 3,
    replication_factor: int = 1,
    timeout: float = 10.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    wanted = list(dict.fromkeys(names))
    existing = list_topics(kafka, timeout)
    todo = [n for n in wanted if n not in existing]
    if not todo:
        return []
    admin = admin_client(kafka)
    futures = admin.create_topics(
        [
            NewTopic(n, num_partitions=partitions, replication_factor=replication_factor)
            for n in todo
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue
            raise UserError(f"cannot create topic {name}: {err}") from None
    return created
