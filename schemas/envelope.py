"""CloudEvents 1.0 binary mode over NATS headers, and deterministic ids for derived events."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
# Namespace for uuid5 of derived events: fixed forever, or redelivered handlers stop deduplicating.
DERIVED_ID_NAMESPACE = uuid.UUID("8f7d1c0e-52a3-4b8e-9a41-6d0c2f3b7e15")

_TYPE_RE = re.compile(r"^tuneline\.[a-z]+\.[a-z-]+\.v[0-9]+$")
_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

# attribute name -> header name (binary mode: every attribute is a `ce-` header)
HEADERS = {
    "specversion": "ce-specversion",
    "id": "ce-id",
    "source": "ce-source",
    "type": "ce-type",
    "time": "ce-time",
    "subject": "ce-subject",
    "correlation_id": "ce-correlationid",
    "causation_id": "ce-causationid",
    "tenant": "ce-tenant",
    "datacontenttype": "content-type",
}
REQUIRED = ("specversion", "id", "source", "type", "time", "subject", "correlation_id", "tenant")


class EnvelopeError(ValueError):
    """Envelope headers that are missing or malformed, collected per attribute."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        detail = "; ".join(f"{attr}: {why}" for attr, why in self.problems.items())
        super().__init__(f"invalid CloudEvents envelope: {detail}")


class Envelope(BaseModel):
    """The CloudEvents attributes of one event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: str = Field(default=SPECVERSION, pattern=r"^1\.0$")
    id: str = Field(min_length=1, max_length=200)
    source: str = Field(pattern=r"^tuneline/[a-z0-9-]+$")
    type: str = Field(pattern=_TYPE_RE.pattern)
    time: datetime
    subject: str = Field(min_length=1, max_length=500)
    correlation_id: str = Field(min_length=1, max_length=200)
    causation_id: str | None = Field(default=None, max_length=200)
    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    datacontenttype: str = CONTENT_TYPE
    traceparent: str | None = Field(default=None, pattern=_TRACEPARENT_RE.pattern)

    def to_headers(self) -> dict[str, str]:
        """Binary-mode headers. `Nats-Msg-Id` = `ce-id` so JetStream deduplicates redeliveries."""
        headers = {
            header: _format(getattr(self, attr))
            for attr, header in HEADERS.items()
            if getattr(self, attr) is not None
        }
        headers["Nats-Msg-Id"] = self.id
        if self.traceparent:
            headers["traceparent"] = self.traceparent
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> Envelope:
        """Read an envelope; every missing or malformed attribute is reported, not just the first."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        values: dict[str, str] = {}
        problems: dict[str, str] = {}
        for attr, header in HEADERS.items():
            value = headers.get(header)
            if value is None or value == "":
                if attr in REQUIRED:
                    problems[attr] = f"header {header!r} is missing"
                continue
            values[attr] = value
        if "traceparent" in headers:
            values["traceparent"] = headers["traceparent"]
        try:
            envelope = cls.model_validate(values)
        except ValidationError as error:
            for e in error.errors():
                attr = str(e["loc"][0]) if e["loc"] else "envelope"
                problems.setdefault(attr, f"{e['msg']} (got {e.get('input')!r})")
            raise EnvelopeError(problems) from None
        if problems:
            raise EnvelopeError(problems)
        return envelope


def _format(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def derived_event_id(cause_id: str, ce_type: str, *discriminators: object) -> str:
    """Id of an event caused by another: the same inputs always give the same id.

    A redelivered handler therefore republishes the same `ce-id`; JetStream's duplicate
    window drops it, and beyond the window the registry's unique key does.
    """
    name = "|".join([cause_id, ce_type, *(str(d) for d in discriminators)])
    return str(uuid.uuid5(DERIVED_ID_NAMESPACE, name))


def new_event_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)
