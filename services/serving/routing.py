"""Which version answers a request: the route table as this replica sees it, tenants and traffic split."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas.refs import ModelRef
from schemas.serving import Role, RouteEntry

# Request fields that would let a client pick weights themselves: never honoured, always refused.
WEIGHT_FIELDS = ("adapter", "adapter_path", "adapters", "lora", "lora_path", "lora_request", "model_path")
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RequestRefused(Exception):
    """An OpenAI-style error: HTTP status, error type, code and a message naming the fix."""

    def __init__(self, status: int, message: str, *, kind: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param
        self.counted = False  # a generation failure is counted where it is measured


@dataclass(frozen=True)
class Decision:
    route: RouteEntry
    role: Role
    ref: ModelRef
    mirror: bool  # also send a shadow copy to the candidate

    @property
    def version_id(self) -> str:
        return self.ref.version_id()


def refuse_weight_choice(body: dict[str, Any]) -> None:
    """A request may name a route alias only; paths and adapter fields are refused."""
    named = [f for f in WEIGHT_FIELDS if f in body]
    if named:
        raise RequestRefused(
            403,
            f"request field {named[0]!r} is refused: serving loads only registered versions through "
            "routes; put the adapter through training or merging and name its route in `model`",
            kind="permission_error",
            code="adapter_by_path_refused",
            param=named[0],
        )
    model = body.get("model")
    if isinstance(model, str) and not _ALIAS.match(model):
        looks_like_path = any(c in model for c in "/\\~") or model.startswith(".")
        raise RequestRefused(
            403 if looks_like_path else 404,
            (
                f"model {model!r} looks like a path: serving never loads weights by path; name a "
                "route alias (GET /v1/models lists yours)"
            )
            if looks_like_path
            else f"model {model!r} is not a route alias; GET /v1/models lists yours",
            kind="permission_error" if looks_like_path else "invalid_request_error",
            code="adapter_by_path_refused" if looks_like_path else "model_not_found",
            param="model",
        )


class RouteBook:
    """This replica's copy of the route table, updated by the KV watcher."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteEntry] = {}
        self.revisions: dict[str, int] = {}

    def apply(self, route: str, entry: RouteEntry | None, revision: int) -> None:
        if revision and revision < self.revisions.get(route, 0):
            return  # an older update delivered late
        self.revisions[route] = revision
        if entry is None:
            self.routes.pop(route, None)
        else:
            self.routes[route] = entry

    def visible_to(self, tenant: str) -> list[RouteEntry]:
        return sorted((e for e in self.routes.values() if e.tenant == tenant), key=lambda e: e.route)

    def resolve(self, model: str, tenant: str) -> RouteEntry:
        entry = self.routes.get(model)
        # another tenant's route is answered exactly like a missing one: a 403 would tell a caller
        # which route names other tenants use
        if entry is None or entry.tenant != tenant:
            raise RequestRefused(
                404,
                f"model {model!r}: no such route; GET /v1/models lists the routes of your API key",
                kind="invalid_request_error",
                code="model_not_found",
                param="model",
            )
        return entry

    def decide(self, model: str, tenant: str, draw: float, mirror_draw: float) -> Decision:
        """Candidate with probability candidate_weight %, else stable; shadow-mirror by shadow_percent."""
        entry = self.resolve(model, tenant)
        candidate = entry.candidate
        if candidate is not None and entry.candidate_weight > 0 and draw * 100 < entry.candidate_weight:
            return Decision(entry, "candidate", candidate, mirror=False)
        if entry.stable is None:
            if candidate is not None and entry.candidate_weight >= 100:
                return Decision(entry, "candidate", candidate, mirror=False)
            raise RequestRefused(
                503,
                f"route {model!r} has no stable version yet (a rollout starts it on gates.passed)",
                kind="service_unavailable",
                code="route_empty",
            )
        mirror = entry.shadow and candidate is not None and mirror_draw * 100 < entry.shadow_percent
        return Decision(entry, "stable", entry.stable, mirror=mirror)
