"""The OpenAI-compatible HTTP API: thin routes over `ServingService`; errors are typed `ErrorResponse`s."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.serving.protocol import ErrorBody, ErrorResponse
from services.serving.routing import RequestRefused
from services.serving.service import Kind, Prepared, ServingService


def error_response(refused: RequestRefused) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorBody(message=refused.message, type=refused.kind, code=refused.code, param=refused.param)
    )
    return JSONResponse(body.model_dump(), status_code=refused.status)


def _choice(p: Prepared, text: str, finish_reason: str) -> dict[str, Any]:
    if p.kind == "chat":
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}


def _envelope(p: Prepared, request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion" if p.kind == "chat" else "text_completion",
        "created": int(p.arrived),
        "model": p.model_name,
        "system_fingerprint": p.fingerprint,
    }


def create_http_app(
    service: ServingService, registry: CollectorRegistry, health: Callable[[], dict[str, Any]]
) -> FastAPI:
    app = FastAPI(title="tuneline serving", version="1", docs_url=None, redoc_url=None)

    async def answer(request: Request, kind: Kind) -> Response:
        try:
            tenant = service.tenant_for(request.headers.get("authorization"))
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RequestRefused(400, "the request body is not JSON", kind="invalid_request_error",
                                     code="invalid-body") from None  # fmt: skip
            prepared = await service.prepare(tenant, body, kind)
            request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
            if body.get("stream"):
                return StreamingResponse(
                    _sse(service, prepared, request_id),
                    media_type="text/event-stream",
                    headers=service.headers(prepared),
                )
            result = await service.complete(prepared)
        except RequestRefused as refused:
            return error_response(refused)
        payload = _envelope(prepared, request_id) | {
            "choices": [_choice(prepared, result.text, result.finish_reason)],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
            "tuneline": service.provenance(prepared),
        }
        return JSONResponse(payload, headers=service.headers(prepared))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await answer(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, "completion")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            tenant = service.tenant_for(request.headers.get("authorization"))
        except RequestRefused as refused:
            return error_response(refused)
        data = [
            {
                "id": entry.route,
                "object": "model",
                "created": int(entry.updated_at),
                "owned_by": entry.tenant,
                "tuneline": {
                    "stable_version": entry.stable.version_id() if entry.stable else None,
                    "candidate_version": entry.candidate.version_id() if entry.candidate else None,
                    "candidate_weight": entry.candidate_weight,
                    "shadow": entry.shadow,
                    "revision": service.book.revisions.get(entry.route, 0),
                },
            }
            for entry in service.book.visible_to(tenant)
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/health")
    async def health_check() -> Response:
        status = health()
        return JSONResponse(status, status_code=200 if status.get("status") == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _sse(service: ServingService, p: Prepared, request_id: str) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    head = _envelope(p, request_id) | {
        "object": "chat.completion.chunk" if p.kind == "chat" else "text_completion"
    }

    def chunk(delta: str | None, finish: str | None, first: bool = False) -> bytes:
        if p.kind == "chat":
            content: dict[str, Any] = {"role": "assistant"} if first else {}
            if delta:
                content["content"] = delta
            choice: dict[str, Any] = {"index": 0, "delta": content, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps(head | {'choices': [choice]})}\n\n".encode()

    yield chunk(None, None, first=True)
    try:
        async for delta in service.stream(p):
            yield chunk(delta, None)
    except RequestRefused as refused:
        error = {"error": {"message": refused.message, "type": refused.kind, "code": refused.code}}
        yield f"data: {json.dumps(error)}\n\n".encode()
        yield b"data: [DONE]\n\n"
        return
    yield chunk(None, "stop")
    tail = head | {"choices": [], "tuneline": service.provenance(p), "created": int(time.time())}
    yield f"data: {json.dumps(tail)}\n\n".encode()
    yield b"data: [DONE]\n\n"
