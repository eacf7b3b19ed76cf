"""One raw-topic record to the rows it writes: decoded, read through the canonical model, and its failure named.

Pure code over one record: whatever it raises is that record's fault (or a bug it triggers), so the projector
dead-letters that record alone and goes on.
"""

from __future__ import annotations

from aiokafka import ConsumerRecord

from plumbing.errors import error_site
from projections.errors import PoisonRecordError, ProjectionError
from projections.handlers.writes import Writes, writes_for
from schemas import EnvelopeCodec
from schemas.stripe_objects import UnreadableObjectError

Event = tuple[str, str, Writes]  # (tenant_id, event_id, writes)


def decode(codec: EnvelopeCodec, record: ConsumerRecord) -> Event:
    """Returns (tenant_id, event_id, writes) of one record; raises EnvelopeError or ProjectionError.

    Decoding and the handlers are pure code over one record: whatever they raise is that record's
    fault (or a bug it triggers), so it becomes PoisonRecordError and the record is dead-lettered alone.
    """
    envelope = codec.decode(record.value)
    try:
        return envelope.tenant_id, envelope.event_id, writes_for(envelope)
    except ProjectionError:
        raise
    except UnreadableObjectError as exc:  # money that cannot be derived: named by its own reason in health
        exc.event_id = envelope.event_id
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        # Named by where it was raised: its text may quote the record (the tenant's health shows the message).
        raise PoisonRecordError(f"cannot project {envelope.event_type} {envelope.event_id}: {error_site(exc)}",
                                envelope.event_id) from exc
