"""Builds the JSON Schema of every event and the AsyncAPI 3.0 document, as plain dicts (no I/O)."""

from __future__ import annotations

from typing import Any

from schemas.catalogue import EVENTS
from schemas.envelope import HEADERS, REQUIRED, Envelope
from schemas.subjects import DLQ_PREFIX, EVENTS_STREAM

TITLE = "tuneline events"
SPEC_VERSION = "1.0.0"


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """`{event_type: JSON Schema}`; each schema names its CloudEvents type and subject."""
    out: dict[str, dict[str, Any]] = {}
    for name, cls in sorted(EVENTS.items()):
        schema = cls.model_json_schema(mode="validation")
        schema["$id"] = f"https://tuneline.dev/schemas/{cls.ce_type()}.json"
        schema["x-cloudevents-type"] = cls.ce_type()
        schema["x-nats-subject"] = cls.subject()
        out[name] = schema
    return out


def _headers_schema() -> dict[str, Any]:
    fields = Envelope.model_fields
    properties: dict[str, Any] = {}
    header_names = {a: h for a, h in HEADERS.items() if a != "datacontenttype"}
    header_names["traceparent"] = "traceparent"
    for attr, header in header_names.items():
        properties[header] = {"type": "string", "description": fields[attr].description or attr}
    properties["Nats-Msg-Id"] = {"type": "string", "description": "equals ce-id (deduplication)"}
    return {
        "type": "object",
        "properties": properties,
        "required": [header_names[a] for a in REQUIRED] + ["Nats-Msg-Id"],
    }


def asyncapi_document() -> dict[str, Any]:
    """AsyncAPI 3.0: one channel and one message per event, CloudEvents headers on each."""
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    schemas: dict[str, Any] = {"CloudEventsHeaders": _headers_schema()}
    for name, cls in sorted(EVENTS.items()):
        key = name.replace(".", "_").replace("-", "_")
        schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(def_name, definition)
        schemas[cls.__name__] = schema
        messages[key] = {
            "name": cls.ce_type(),
            "title": cls.__name__,
            "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else name,
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        }
        channels[key] = {
            "address": cls.subject(),
            "description": f"JetStream stream {EVENTS_STREAM}; dead letters on {DLQ_PREFIX}.{cls.subject()}",
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"publish_{key}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{key}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": TITLE,
            "version": SPEC_VERSION,
            "description": "Events of the tuneline model lifecycle, CloudEvents 1.0 binary mode "
            "over NATS JetStream.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
