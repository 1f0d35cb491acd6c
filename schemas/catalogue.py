"""The event catalogue: every event type of DESIGN.md, looked up by name or CloudEvents type."""

from __future__ import annotations

from schemas.candidate import CandidateReady
from schemas.dataset import DatasetApproved, DatasetRejected, DatasetSubmitted
from schemas.evaluation import (
    DriftCheckRequested,
    DriftDetected,
    EvalCompleted,
    EvalFailed,
    GatesFailed,
    GatesPassed,
)
from schemas.events import Event
from schemas.merge import MergeFailed, MergeRequested
from schemas.rollout import (
    RolloutAbortRequested,
    RolloutPaused,
    RolloutPauseRequested,
    RolloutPromoted,
    RolloutPromoteRequested,
    RolloutResumeRequested,
    RolloutRollbackRequested,
    RolloutRolledBack,
    RolloutStarted,
    RolloutStep,
)
from schemas.serving import ServingWindow
from schemas.slo import IncidentReported, RetrainRequested, RouteAlertRaised, RouteAlertResolved
from schemas.training import (
    TrainingCancelled,
    TrainingCancelRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)

_ALL: tuple[type[Event], ...] = (
    DatasetSubmitted,
    DatasetApproved,
    DatasetRejected,
    TrainingStarted,
    TrainingProgress,
    TrainingFailed,
    TrainingCancelRequested,
    TrainingCancelled,
    CandidateReady,
    MergeRequested,
    MergeFailed,
    EvalCompleted,
    EvalFailed,
    GatesPassed,
    GatesFailed,
    RolloutStarted,
    RolloutStep,
    RolloutPromoted,
    RolloutRolledBack,
    RolloutPaused,
    RouteAlertRaised,
    RouteAlertResolved,
    IncidentReported,
    RetrainRequested,
    RolloutPauseRequested,
    RolloutResumeRequested,
    RolloutAbortRequested,
    RolloutRollbackRequested,
    RolloutPromoteRequested,
    ServingWindow,
    DriftCheckRequested,
    DriftDetected,
)

EVENTS: dict[str, type[Event]] = {cls.event_type: cls for cls in _ALL}
_BY_CE_TYPE: dict[str, type[Event]] = {cls.ce_type(): cls for cls in _ALL}


class UnknownEventType(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def event_class(event_type: str) -> type[Event]:
    """Look up an event by `<domain>.<event>` name; the error lists the known names."""
    try:
        return EVENTS[event_type]
    except KeyError:
        raise UnknownEventType(
            f"unknown event type {event_type!r}; known types: {', '.join(sorted(EVENTS))}"
        ) from None


def event_class_for_ce_type(ce_type: str) -> type[Event]:
    try:
        return _BY_CE_TYPE[ce_type]
    except KeyError:
        raise UnknownEventType(
            f"unknown CloudEvents type {ce_type!r}; known: {', '.join(sorted(_BY_CE_TYPE))}"
        ) from None
