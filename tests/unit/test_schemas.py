"""Event contracts: the catalogue is complete, producers are strict, consumers are tolerant."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from schemas.catalogue import EVENTS, UnknownEventType, event_class, event_class_for_ce_type
from schemas.dataset import DatasetSubmitted
from schemas.merge import MergeRequested
from schemas.recipe import TrainingRecipe
from tests.support.events import candidate, model_ref, submitted

# The catalogue of DESIGN.md, by name (plus merge.failed, added by the merging issue's contract).
DESIGN_EVENTS = {
    "dataset.submitted",
    "dataset.approved",
    "dataset.rejected",
    "training.started",
    "training.progress",
    "training.failed",
    "training.cancelled",
    "training.cancel-requested",
    "candidate.ready",
    "merge.requested",
    "merge.failed",
    "eval.completed",
    "eval.failed",  # added by tuneline: an evaluation that could not run is no gate verdict
    "gates.passed",
    "gates.failed",
    "rollout.started",
    "rollout.step",
    "rollout.promoted",
    "rollout.rolled-back",
    "rollout.paused",
    "route.alert-raised",  # added by tuneline (issue 24): the guardian after promotion
    "route.alert-resolved",
    "incident.reported",  # added by tuneline (issue 24): only the platform operator publishes it
    "retrain.requested",  # added by tuneline (issue 24): the guardian's (or an operator's) retrain action
    "rollout.pause-requested",
    "rollout.resume-requested",
    "rollout.abort-requested",
    "rollout.promote-requested",
    "rollout.rollback-requested",  # added by tuneline: the operator's manual rollback (docs/design.md)
    "serving.window",
    "drift.check-requested",
    "drift.detected",
}


def test_catalogue_has_every_design_event() -> None:
    assert set(EVENTS) == DESIGN_EVENTS


@pytest.mark.parametrize("name", sorted(DESIGN_EVENTS))
def test_every_event_is_frozen_forbids_extra_and_names_its_subject(name: str) -> None:
    cls = EVENTS[name]
    assert cls.model_config.get("extra") == "forbid"
    assert cls.model_config.get("frozen") is True
    assert cls.subject() == f"tuneline.events.{name}"
    assert cls.ce_type() == f"tuneline.{name}.v1"
    assert event_class_for_ce_type(cls.ce_type()) is cls


def test_producer_typo_is_an_error() -> None:
    data = submitted().model_dump(mode="json")
    data["taks"] = "typo"
    with pytest.raises(ValidationError, match="taks"):
        DatasetSubmitted.model_validate(data)


def test_consumer_ignores_and_logs_unknown_fields(caplog: pytest.LogCaptureFixture) -> None:
    data = submitted().model_dump(mode="json")
    data["added_in_v1_1"] = {"x": 1}
    data["recipe"]["new_knob"] = 3
    with caplog.at_level(logging.WARNING):
        event = DatasetSubmitted.read(data)
    assert event == submitted()
    assert "added_in_v1_1" in caplog.text and "recipe.new_knob" in caplog.text


def test_consumer_still_refuses_wrong_known_fields() -> None:
    data = submitted().model_dump(mode="json")
    data["unknown"] = 1
    data["sources"] = []
    with pytest.raises(ValidationError, match="sources"):
        DatasetSubmitted.read(data)


def test_events_are_immutable() -> None:
    event = submitted()
    with pytest.raises(ValidationError):
        event.task = "other"  # type: ignore[misc]


def test_model_ref_version_id_is_stable_and_tracks_the_tuple() -> None:
    assert model_ref("a").version_id() == model_ref("a").version_id()
    assert model_ref("a").version_id() != model_ref("b").version_id()
    assert model_ref("a").version_id().startswith("mv-")
    assert candidate("a").entity_id() == model_ref("a").version_id()


def test_model_ref_round_trips_through_json() -> None:
    ref = model_ref()
    assert type(ref).model_validate_json(ref.model_dump_json()) == ref


def test_distill_recipe_needs_a_teacher() -> None:
    with pytest.raises(ValidationError, match="teacher"):
        TrainingRecipe(base_model="m", method="distill")


def test_merge_weights_must_match_inputs() -> None:
    with pytest.raises(ValidationError, match="one weight per input"):
        MergeRequested(request_id="m1", tenant="acme", inputs=("mv-a", "mv-b"), method="ties", weights=(1.0,))


def test_unknown_event_type_lists_known_ones() -> None:
    with pytest.raises(UnknownEventType, match=r"dataset\.submitted"):
        event_class("dataset.submited")


def test_sha256_fields_reject_non_hex() -> None:
    data = candidate().model_dump(mode="json")
    data["candidate"]["base"]["sha256"] = "not-a-hash"
    with pytest.raises(ValidationError, match=r"candidate\.base\.sha256"):
        type(candidate()).model_validate(data)


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"method": "dpo"}, "sft-lora or sft-qlora"), ({"packing": True}, "packing: false")],
)
def test_replay_anchor_is_refused_where_it_cannot_apply(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        TrainingRecipe(base_model="m", replay_anchor={"alpha": 1.0}, **fields)  # type: ignore[arg-type]


def test_a_gates_passed_with_a_failed_gate_is_refused_by_the_contract() -> None:
    from schemas.evaluation import GateResult, GatesFailed, GatesPassed
    from schemas.gate_policy import GatePolicy

    ok = GateResult(gate="target-gain:target", value=1.0, threshold=0.0, comparator=">=", passed=True)
    bad = GateResult(gate="safety-refusal:safety", value=-3.0, threshold=0.0, comparator=">=", passed=False)
    common = {"candidate": model_ref(), "tenant": "acme", "route": "support", "policy": GatePolicy()}
    with pytest.raises(ValidationError, match="safety-refusal:safety"):
        GatesPassed(**common, gates=(ok, bad))
    with pytest.raises(ValidationError, match="names no failed gate"):
        GatesFailed(**common, gates=(ok,))
    assert GatesPassed(**common, gates=(ok,)).gates == (ok,)
    assert GatesFailed(**common, gates=(ok, bad)).gates[1].passed is False
