"""Checks on what a request sends and on what a generation returns, and the errors they answer with."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonschema

from services.serving.generation import BackendError, PromptRefused
from services.serving.routing import RequestRefused


def schema_valid(text: str, schema: dict[str, Any]) -> bool:
    candidate = text.strip()
    if candidate.startswith("```"):
        candidate = candidate.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError:
        return False
    return bool(jsonschema.Draft202012Validator(schema).is_valid(value))


def unencodable_string(body: Any) -> str | None:
    """The JSON path of the first string in `body` that is not valid Unicode (a lone surrogate such
    as "\\ud800"), or None. Tokenizers raise on such text, so it is refused before batching."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and unencodable_string(key) is None:
                    stack.append((f"{path}.{key}" if path else key, item))
                else:
                    return path or "body"
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def refusal_for(error: Exception) -> RequestRefused:
    """The OpenAI-shaped error a failed generation answers with: 400 for this request's own prompt,
    503 for a version this replica cannot serve, 500 for anything else."""
    if isinstance(error, RequestRefused):
        return error
    if isinstance(error, PromptRefused):
        return RequestRefused(400, str(error), kind="invalid_request_error", code="invalid_prompt")
    if isinstance(error, BackendError):
        return RequestRefused(503, f"generation failed: {error}", kind="service_unavailable",
                              code="version_unavailable")  # fmt: skip
    return RequestRefused(500, f"generation failed: {type(error).__name__}: {error}", kind="server_error",
                          code="generation_failed")  # fmt: skip
