"""The CloudEvents binary-mode codec and deterministic ids of derived events."""

from __future__ import annotations

import pytest

from schemas.envelope import Envelope, EnvelopeError, derived_event_id, now

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def envelope(**overrides: object) -> Envelope:
    values: dict[str, object] = {
        "id": "e1",
        "source": "tuneline/curation",
        "type": "tuneline.dataset.approved.v1",
        "time": now(),
        "subject": "ds-1",
        "correlation_id": "c1",
        "causation_id": "e0",
        "tenant": "acme",
        "traceparent": TRACEPARENT,
    }
    values.update(overrides)
    return Envelope.model_validate(values)


def test_headers_round_trip() -> None:
    original = envelope()
    headers = original.to_headers()
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-correlationid"] == "c1"
    assert headers["ce-causationid"] == "e0"
    assert headers["ce-tenant"] == "acme"
    assert headers["traceparent"] == TRACEPARENT
    assert headers["Nats-Msg-Id"] == headers["ce-id"] == "e1"
    assert headers["ce-time"].endswith("Z")
    assert Envelope.from_headers(headers) == original


def test_header_names_are_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in envelope().to_headers().items()}
    assert Envelope.from_headers(headers).id == "e1"


def test_every_problem_is_reported_per_attribute() -> None:
    headers = envelope().to_headers()
    del headers["ce-tenant"]
    del headers["ce-subject"]
    headers["ce-type"] = "dataset.approved"
    headers["ce-time"] = "yesterday"
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers(headers)
    assert set(caught.value.problems) == {"tenant", "subject", "type", "time"}
    assert "ce-tenant" in caught.value.problems["tenant"]


def test_no_headers_at_all() -> None:
    with pytest.raises(EnvelopeError, match="ce-id"):
        Envelope.from_headers(None)


def test_derived_ids_are_deterministic_and_distinguish_siblings() -> None:
    a = derived_event_id("cause", "tuneline.training.progress.v1", 10)
    assert a == derived_event_id("cause", "tuneline.training.progress.v1", 10)
    assert a != derived_event_id("cause", "tuneline.training.progress.v1", 11)
    assert a != derived_event_id("cause2", "tuneline.training.progress.v1", 10)
    assert a != derived_event_id("cause", "tuneline.training.started.v1", 10)
