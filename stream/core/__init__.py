"""The pure core of `serve`: no Kafka client, no model runtime, no threads, no clock of its own.

Everything here takes plain values (a `KafkaMessage` is anything with the five accessor methods of
a confluent-kafka `Message` the core reads) so the decisions that matter for correctness (what is
a dead letter, what goes into an output record, which offset is safe to commit, when a
micro-batch closes) are unit-tested with fakes. `stream.serve` is the Kafka shell around it;
`tests/unit/test_imports.py` keeps confluent_kafka, threading and torch out.

    decode    bytes -> Inbound (a TweetIn or a DeadLetter)
    records   OutRecord, Outcome, make_dead_letter, sentiment_record
    offsets   OffsetTracker (at-least-once), batch_offsets (exactly-once)
    batching  MicroBatcher, micro_batch_size
    steps     Batch, prepare / infer / build_records
    planning  Encoded, plan_batches(_by_cost), softmax
    text      TextPipeline; lang: the English filter
"""

from stream.core.batching import MICRO_BATCH_FACTOR, MicroBatcher, micro_batch_size
from stream.core.decode import (
    KafkaMessage,
    decode_message,
    get_path,
    parse_event_time,
    parse_label,
)
from stream.core.offsets import OffsetTracker, TopicPartitionKey, batch_offsets
from stream.core.records import (
    CleanResultLike,
    Inbound,
    Outcome,
    OutRecord,
    TextPipelineLike,
    internal_error,
    make_dead_letter,
    sentiment_record,
    to_out_record,
    too_large_record,
)

__all__ = [
    "MICRO_BATCH_FACTOR",
    "CleanResultLike",
    "Inbound",
    "KafkaMessage",
    "MicroBatcher",
    "OffsetTracker",
    "OutRecord",
    "Outcome",
    "TextPipelineLike",
    "TopicPartitionKey",
    "batch_offsets",
    "decode_message",
    "get_path",
    "internal_error",
    "make_dead_letter",
    "micro_batch_size",
    "parse_event_time",
    "parse_label",
    "sentiment_record",
    "to_out_record",
    "too_large_record",
]
