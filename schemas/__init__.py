"""The Avro contract between the write path and the read path, and the one codec both use."""

from schemas.codec import (
    CorruptRecordError,
    DeadLetter,
    Envelope,
    EnvelopeCodec,
    EnvelopeError,
    Source,
    UnknownSchemaError,
    envelope_key,
)

__all__ = [
    "CorruptRecordError",
    "DeadLetter",
    "Envelope",
    "EnvelopeCodec",
    "EnvelopeError",
    "Source",
    "UnknownSchemaError",
    "envelope_key",
]
