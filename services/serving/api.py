"""The OpenAI-compatible HTTP API: thin routes over `ServingService`; errors are typed `ErrorResponse`s."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.serving.generation import Completion
from services.serving.protocol import ErrorBody, ErrorResponse
from services.serving.responses import (
    DONE,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    Chunk,
    CompletionChoice,
    Delta,
    ModelCard,
    ModelList,
    Provenance,
    RouteState,
    StreamError,
    TextCompletion,
    TextCompletionChunk,
    Usage,
    sse,
)
from services.serving.routing import RequestRefused
from services.serving.service import Kind, Prepared, ServingService

log = logging.getLogger(__name__)


def error_response(refused: RequestRefused) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorBody(message=refused.message, type=refused.kind, code=refused.code, param=refused.param)
    )
    return JSONResponse(body.model_dump(), status_code=refused.status)


def internal_error(error: BaseException) -> RequestRefused:
    return RequestRefused(
        500, f"internal error ({type(error).__name__}); the request was logged, retry it or report it",
        kind="server_error", code="internal_error",
    )  # fmt: skip


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, refused with 413 beyond `limit` bytes (read in chunks, never whole)."""
    too_large = RequestRefused(
        413, f"the request body is larger than this server's limit of {limit} bytes; send a smaller body",
        kind="invalid_request_error", code="request_too_large",
    )  # fmt: skip
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestRefused(400, "the request body is not JSON", kind="invalid_request_error",
                             code="invalid_body") from None  # fmt: skip
    except RecursionError:
        raise RequestRefused(400, "the request body is nested too deeply to be a request; flatten it",
                             kind="invalid_request_error", code="invalid_body") from None  # fmt: skip


def _envelope(p: Prepared, request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "created": int(p.arrived),
        "model": p.model_name,
        "system_fingerprint": p.fingerprint,
    }


def usage_of(result: Completion) -> Usage:
    return Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


def completion_body(p: Prepared, request_id: str, result: Completion, provenance: Provenance) -> BaseModel:
    """The whole answer of a non-streamed request, as OpenAI shapes it for its kind."""
    usage = usage_of(result)
    head = _envelope(p, request_id)
    if p.kind == "chat":
        choice = ChatChoice(message=AssistantMessage(content=result.text), finish_reason=result.finish_reason)
        return ChatCompletion(**head, choices=[choice], usage=usage, tuneline=provenance)
    text = CompletionChoice(text=result.text, finish_reason=result.finish_reason)
    return TextCompletion(**head, choices=[text], usage=usage, tuneline=provenance)


async def answer(service: ServingService, request: Request, kind: Kind) -> Response:
    """One completion request, answered whole or streamed; every refusal is a typed error."""
    try:
        return await _answer(service, request, kind)
    except RequestRefused as refused:
        return _refused(service, refused)
    except Exception as error:
        log.exception("%s request failed", kind)
        return _refused(service, internal_error(error))


def _refused(service: ServingService, refused: RequestRefused) -> JSONResponse:
    """The error answer, counted: by code, and among all requests by status (a generation that
    failed was counted with its route and role where it was measured)."""
    service.metrics.refused.labels(str(refused.status), refused.code).inc()
    if not refused.counted:
        service.metrics.requests.labels("", "refused", str(refused.status)).inc()
    return error_response(refused)


async def _answer(service: ServingService, request: Request, kind: Kind) -> Response:
    tenant = service.tenant_for(request.headers.get("authorization"))
    body = await read_json(request, service.settings.max_body_bytes)
    prepared = await service.prepare(tenant, body, kind)
    request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
    if body.get("stream"):
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(
            _sse(service, prepared, request_id, usage=usage),
            media_type="text/event-stream",
            headers=service.headers(prepared),
        )
    result = await service.complete(prepared)
    payload = completion_body(prepared, request_id, result, service.provenance(prepared))
    return JSONResponse(payload.model_dump(mode="json"), headers=service.headers(prepared))


def model_list(service: ServingService, tenant: str) -> ModelList:
    """The routes this tenant may call, each with the versions it serves now."""
    return ModelList(
        data=[
            ModelCard(
                id=entry.route,
                created=int(entry.updated_at),
                owned_by=entry.tenant,
                tuneline=RouteState(
                    stable_version=entry.stable.version_id() if entry.stable else None,
                    candidate_version=entry.candidate.version_id() if entry.candidate else None,
                    candidate_weight=entry.candidate_weight,
                    shadow=entry.shadow,
                    revision=service.book.revisions.get(entry.route, 0),
                ),
            )
            for entry in service.book.visible_to(tenant)
        ]
    )


def create_http_app(service: ServingService, health: Callable[[], dict[str, Any]]) -> FastAPI:
    """The public API. Prometheus' /metrics is not here: the runtime serves it on the internal
    `TUNELINE_METRICS_PORT`, because its labels name every tenant's routes."""
    app = FastAPI(title="tuneline serving", version="1", docs_url=None, redoc_url=None)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await answer(service, request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(service, request, "completion")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            tenant = service.tenant_for(request.headers.get("authorization"))
        except RequestRefused as refused:
            return error_response(refused)
        return JSONResponse(model_list(service, tenant).model_dump(mode="json"))

    @app.get("/v1/models/{model_id}")
    async def model(request: Request, model_id: str) -> Response:
        try:
            tenant = service.tenant_for(request.headers.get("authorization"))
        except RequestRefused as refused:
            return error_response(refused)
        route = model_id.split("@", 1)[0]  # answers name their model `<route>@<version>`
        found = [card for card in model_list(service, tenant).data if card.id == route]
        if not found:
            return error_response(
                RequestRefused(404, f"the model {model_id!r} does not exist; GET /v1/models lists yours",
                               kind="invalid_request_error", code="model_not_found", param="model")
            )  # fmt: skip
        return JSONResponse(found[0].model_dump(mode="json"))

    @app.exception_handler(StarletteHTTPException)
    async def not_here(request: Request, error: StarletteHTTPException) -> Response:
        """Unknown paths and methods answer in OpenAI's error shape, not FastAPI's `detail`."""
        code = "unknown_url" if error.status_code == 404 else "method_not_allowed"
        return error_response(
            RequestRefused(
                error.status_code,
                f"{request.method} {request.url.path} is not served here; the API is /v1/models, "
                "/v1/chat/completions and /v1/completions",
                kind="invalid_request_error", code=code,
            )
        )  # fmt: skip

    @app.get("/health")
    async def health_check() -> Response:
        # anyone can reach this port: the answer says up or not, never routes, tenants or adapters
        # (those are on the internal metrics port and the NATS health query)
        status = health()
        public = {key: status[key] for key in ("service", "status", "uptime_s") if key in status}
        return JSONResponse(public, status_code=200 if status.get("status") == "ok" else 503)

    return app


def _chunk(p: Prepared, head: dict[str, Any], delta: str | None, finish: str | None, first: bool) -> Chunk:
    if p.kind == "chat":
        increment = Delta(role="assistant" if first else None, content=delta or None)
        return ChatCompletionChunk(**head, choices=[ChatChunkChoice(delta=increment, finish_reason=finish)])
    return TextCompletionChunk(**head, choices=[CompletionChoice(text=delta or "", finish_reason=finish)])


async def _sse(service: ServingService, p: Prepared, request_id: str, *, usage: bool) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`: the last choice
    chunk carries the finish reason (`length` when max_tokens cut the answer); with
    `stream_options.include_usage` a final chunk with no choices carries the usage."""
    head = _envelope(p, request_id)
    yield sse(_chunk(p, head, None, None, first=True))
    finished: list[Completion] = []
    try:
        async for delta in service.stream(p, finished):
            yield sse(_chunk(p, head, delta, None, first=False))
    except RequestRefused as refused:
        yield sse(StreamError(error={"message": refused.message, "type": refused.kind, "code": refused.code}))
        yield DONE
        return
    result = finished[0]
    yield sse(_chunk(p, head, None, result.finish_reason, first=False))
    tail_type = ChatCompletionChunk if p.kind == "chat" else TextCompletionChunk
    closing = head | {"created": int(time.time())}
    tail = {"usage": usage_of(result)} if usage else {}
    yield sse(tail_type(**closing, choices=[], tuneline=service.provenance(p), **tail))
    yield DONE
