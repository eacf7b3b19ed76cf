"""Reads and writes the envelope and dead-letter records: Avro single-object encoding via fastavro.

Each value on a topic is `C3 01` + the writer schema's 8-byte CRC-64-AVRO fingerprint + the Avro
binary body, so any Avro library holding the `.avsc` files can decode it. A reader resolves the
writer's schema by fingerprint among the versions it knows (this folder and `history/`) and reads
it into its own schema, which is how old readers and new writers coexist.
"""

from __future__ import annotations

import enum
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

Schema = dict[str, Any]  # a schema as fastavro.parse_schema returns it
SCHEMA_DIR = Path(__file__).resolve().parent
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
HEADER_LENGTH = len(SINGLE_OBJECT_MAGIC) + 8


class EnvelopeError(Exception):
    """A record could not be encoded or decoded; retrying the same bytes will not help."""

    retriable = False


class UnknownSchemaError(EnvelopeError):
    """The record names a writer schema (by fingerprint) this reader does not know."""


class CorruptRecordError(EnvelopeError):
    """The bytes are not a single-object-encoded record of a known schema (truncated, garbage)."""


class Source(str, enum.Enum):
    """Which producer put the event on the topic."""

    WEBHOOK = "webhook"
    POLL = "poll"
    IMPORT = "import"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One raw Stripe event with where and when we got it; `payload` is redacted Stripe JSON."""

    tenant_id: str
    event_id: str
    event_type: str
    object_type: str
    object_id: str
    event_time: datetime
    received_time: datetime
    source: Source
    livemode: bool
    api_version: str | None
    connected_account: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a consumer could not apply, with the reason: kept whole, or cut to a bound when large (see
    projections/projector/dead_letters.py; the whole record stays on its topic)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    consumer_group: str
    error_type: str
    error_message: str
    failed_time: datetime


ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope))


def envelope_key(tenant_id: str, object_id: str) -> bytes:
    """Returns the record key: tenant then object, so one object's events stay in one partition."""
    return f"{tenant_id}:{object_id}".encode()


def load_schema(path: Path) -> dict[str, Any]:
    """Returns the parsed Avro schema stored at `path`."""
    return cast(dict[str, Any], fastavro.parse_schema(json.loads(path.read_text())))


def schema_fingerprint(schema: Schema) -> bytes:
    """Returns the 8-byte CRC-64-AVRO fingerprint that heads single-object-encoded records."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def timestamp_millis(value: datetime) -> datetime | int:
    """An aware time as Avro's timestamp-millis, as fastavro writes it (the same long): handed a datetime, fastavro's
    way through its logical types took a third of encoding an envelope (the importer encodes every object). Any
    other value is left to fastavro."""
    if type(value) is not datetime or value.utcoffset() is None:  # naive (or a tzinfo without an offset)
        return value
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class AvroCodec:
    """Single-object encoding of one record type; reads every writer version it was given."""

    def __init__(self, schema: Schema, writer_schemas: Iterable[Schema] = ()):
        self.schema = schema
        self.fingerprint = schema_fingerprint(schema)
        self._header = SINGLE_OBJECT_MAGIC + self.fingerprint
        self._writers: dict[bytes, Schema] = {self.fingerprint: schema}
        for writer in writer_schemas:
            self._writers.setdefault(schema_fingerprint(writer), writer)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Returns the single-object encoding of `record`; raises EnvelopeError if it does not fit the schema."""
        out = io.BytesIO()
        out.write(self._header)
        try:
            fastavro.schemaless_writer(out, self.schema, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EnvelopeError(f"record does not match schema {self.schema['name']}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Returns the record in this codec's schema; raises UnknownSchemaError or CorruptRecordError."""
        if len(data) < HEADER_LENGTH or not data.startswith(SINGLE_OBJECT_MAGIC):
            raise CorruptRecordError(
                f"not an Avro single-object record ({len(data)} bytes, header {data[:2].hex() or 'missing'})"
            )
        fp = data[2:HEADER_LENGTH]
        writer = self._writers.get(fp)
        if writer is None:
            raise UnknownSchemaError(
                f"unknown writer schema fingerprint {fp.hex()} for {self.schema['name']}"
            )
        body = io.BytesIO(data)
        body.seek(HEADER_LENGTH)
        try:
            record = cast(dict[str, Any], fastavro.schemaless_reader(body, writer, self.schema))
        except (EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError) as exc:
            raise CorruptRecordError(f"corrupt {self.schema['name']} record: {exc!r}") from exc
        if body.tell() != len(data):
            raise CorruptRecordError(
                f"corrupt {self.schema['name']} record: {len(data) - body.tell()} trailing bytes"
            )
        return record


def _schemas_named(file_name: str, directory: Path) -> list[dict[str, Any]]:
    """Returns the current schema file and its older versions kept in `history/`."""
    older = sorted((directory / "history").glob(f"{Path(file_name).stem}.v*.avsc"))
    return [load_schema(directory / file_name), *(load_schema(p) for p in older)]


class EnvelopeCodec:
    """Encodes and decodes `Envelope` and `DeadLetter` values; the one codec both paths import."""

    def __init__(
        self,
        envelope_schema: Schema | None = None,
        older_envelope_schemas: Iterable[Schema] | None = None,
    ):
        current, *older = _schemas_named("stripe_event_envelope.avsc", SCHEMA_DIR)
        self.envelopes = AvroCodec(
            envelope_schema or current,
            older if older_envelope_schemas is None else older_envelope_schemas,
        )
        self.dead_letters = AvroCodec(load_schema(SCHEMA_DIR / "dead_letter.avsc"))

    def encode(self, envelope: Envelope) -> bytes:
        """Returns the Kafka record value for `envelope`."""
        # Not dataclasses.asdict: it deep-copies every field, the payload included (hot path).
        record = {name: getattr(envelope, name) for name in ENVELOPE_FIELDS}
        record["source"] = envelope.source.value
        record["event_time"] = timestamp_millis(envelope.event_time)
        record["received_time"] = timestamp_millis(envelope.received_time)
        return self.envelopes.encode(record)

    def record(self, envelope: Envelope) -> tuple[bytes, bytes]:
        """Returns the Kafka record (key, value) of `envelope`: keyed (tenant, object), as every producer keys it."""
        return envelope_key(envelope.tenant_id, envelope.object_id), self.encode(envelope)

    def decode(self, data: bytes) -> Envelope:
        """Returns the envelope in `data`; raises UnknownSchemaError or CorruptRecordError."""
        record = self.envelopes.decode(data)
        try:
            return Envelope(
                tenant_id=record["tenant_id"],
                event_id=record["event_id"],
                event_type=record["event_type"],
                object_type=record["object_type"],
                object_id=record["object_id"],
                event_time=record["event_time"],
                received_time=record["received_time"],
                source=Source(record["source"]),
                livemode=record["livemode"],
                api_version=record.get("api_version"),
                connected_account=record.get("connected_account"),
                payload=record["payload"],
            )
        except (KeyError, ValueError) as exc:
            raise CorruptRecordError(f"envelope is missing or misnames a field: {exc!r}") from exc

    def encode_dead_letter(self, letter: DeadLetter) -> bytes:
        """Returns the Kafka record value for a dead letter."""
        return self.dead_letters.encode(asdict(letter))

    def decode_dead_letter(self, data: bytes) -> DeadLetter:
        """Returns the dead letter in `data`; raises UnknownSchemaError or CorruptRecordError."""
        return DeadLetter(**self.dead_letters.decode(data))
