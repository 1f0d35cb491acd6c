"""schemas/generated/ must match the models: a contract change without regenerating fails here."""

from __future__ import annotations

import json

from schemas.catalogue import EVENTS
from services.cli.generated import GENERATED, _generated_files


def test_generated_schemas_match_the_models() -> None:
    expected = _generated_files()
    on_disk = {p.name: p.read_text() for p in GENERATED.glob("*.json")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, (
        f"schemas/generated drifted (stale: {stale}, extra: {extra}); run `make schemas`"
    )


def test_asyncapi_names_every_event_with_its_subject_and_headers() -> None:
    doc = json.loads((GENERATED / "asyncapi.json").read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {cls.subject() for cls in EVENTS.values()}
    required = set(doc["components"]["schemas"]["CloudEventsHeaders"]["required"])
    assert {"ce-id", "ce-type", "ce-correlationid", "ce-tenant", "Nats-Msg-Id"} <= required
