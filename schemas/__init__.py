"""Message schemas shared by the stream, its producers and its downstream subscribers."""

from schemas.messages import (
    DEAD_LETTER_SCHEMA_VERSION,
    SCHEMA_VERSION,
    DeadLetter,
    DeadLetterKind,
    Label,
    SentimentOut,
    SkipReason,
    SourceRef,
    Status,
    TweetIn,
)

__all__ = [
    "DEAD_LETTER_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "DeadLetter",
    "DeadLetterKind",
    "Label",
    "SentimentOut",
    "SkipReason",
    "SourceRef",
    "Status",
    "TweetIn",
]
