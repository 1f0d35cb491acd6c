"""tuneline event contracts: pydantic models, subjects and the CloudEvents codec. No I/O."""

from schemas.catalogue import EVENTS, event_class, event_class_for_ce_type
from schemas.envelope import Envelope, EnvelopeError, derived_event_id
from schemas.events import Event

__all__ = [
    "EVENTS",
    "Envelope",
    "EnvelopeError",
    "Event",
    "derived_event_id",
    "event_class",
    "event_class_for_ce_type",
]
