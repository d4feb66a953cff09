"""Kafka plumbing shared by every command, as one typed toolkit:

config   producer_config, consumer_config (from the `kafka` settings section)
admin    list_topics, check_topics, create_topics (failures are one-line UserErrors)
clients  ConsumerClient/ProducerClient Protocols, ConfluentClients, produce (BufferError),
         message_timestamp_ms, is_partition_eof, is_too_large
"""

from ops.kafka.admin import admin_client, check_topics, create_topics, list_topics
from ops.kafka.clients import (
    ClientFactory,
    ConfluentClients,
    ConsumerClient,
    ProducerClient,
    is_all_brokers_down,
    is_partition_eof,
    is_too_large,
    kafka_error,
    message_timestamp_ms,
    produce,
)
from ops.kafka.config import consumer_config, producer_config

__all__ = [
    "ClientFactory",
    "ConfluentClients",
    "ConsumerClient",
    "ProducerClient",
    "admin_client",
    "check_topics",
    "consumer_config",
    "create_topics",
    "is_all_brokers_down",
    "is_partition_eof",
    "is_too_large",
    "kafka_error",
    "list_topics",
    "message_timestamp_ms",
    "produce",
    "producer_config",
]
