"""The base class every event payload derives from, and the strict/tolerant readers."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

logger = logging.getLogger(__name__)


class Contract(BaseModel):
    """A frozen value in an event: producers build it strictly (a typo is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Event(Contract):
    """One event payload. Subclasses set `event_type` (`<domain>.<event>`) and `version`."""

    event_type: ClassVar[str]
    version: ClassVar[int] = 1

    @classmethod
    def ce_type(cls) -> str:
        """CloudEvents `type`: `tuneline.<domain>.<event>.v<version>`."""
        return f"tuneline.{cls.event_type}.v{cls.version}"

    @classmethod
    def subject(cls) -> str:
        """NATS subject the event is published on."""
        return f"tuneline.events.{cls.event_type}"

    @classmethod
    def domain(cls) -> str:
        return cls.event_type.split(".", 1)[0]

    def entity_id(self) -> str:
        """CloudEvents `subject`: the id of the entity this event is about."""
        raise NotImplementedError(f"{type(self).__name__} must say which entity it is about")

    @classmethod
    def read(cls, data: Any) -> Self:
        """Consumer-side read: unknown fields are logged and ignored, everything else is strict.

        An older replica must keep working when a newer producer adds an optional field.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as strict_error:
            unknown = [e for e in strict_error.errors() if e["type"] == "extra_forbidden"]
            if not unknown or len(unknown) != strict_error.error_count():
                raise
            logger.warning(
                "%s: ignoring unknown fields %s (newer producer?)",
                cls.event_type,
                [".".join(str(p) for p in e["loc"]) for e in unknown],
            )
            return cls.model_validate(data, extra="ignore")


def validation_problems(error: ValidationError) -> list[str]:
    """`field.path: problem` for every problem, without pydantic's URLs."""
    return [
        f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}"
        for e in error.errors(include_url=False)
    ]


def describe_validation_error(error: ValidationError) -> str:
    """Every problem on one line: `a: Field required; b.c: …`."""
    return "; ".join(validation_problems(error))
