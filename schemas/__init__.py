"""Message schemas shared by the stream, its producers and its downstream subscribers."""

from schemas.messages import (
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
