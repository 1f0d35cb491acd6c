"""The registry's queries as a table: the contract a request must satisfy, what answers it, and
whose records the answer holds, so one query can be asked for every tenant (the platform operator,
`tuneline.rpc.registry.<query>`) or for one tenant (`tuneline.rpc.registry.<query>.<tenant>`, the
only form a tenant operator may send; NATS enforces the tenant token).

Scoped to a tenant, a listing is filtered by that tenant whatever it asked for, and a lookup of
another tenant's record answers exactly as a lookup of a record that does not exist: never say whose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.queries import (
    ApprovedDatasetQuery,
    CardQuery,
    DatasetList,
    DatasetQuery,
    DatasetsQuery,
    EvalsQuery,
    ModelVersionList,
    ModelVersionQuery,
    ModelVersionsQuery,
    QueryError,
    RunList,
    RunQuery,
    RunsQuery,
    TimelineQuery,
)
from schemas.subjects import TENANT_QUERIES
from services.registry.store import RegistryStore
from services.registry.views import NotFound


@dataclass(frozen=True)
class Query:
    contract: type[BaseModel]
    run: Callable[[Any], BaseModel]
    # the tenants whose records an answer holds; None: a listing, filtered by its `tenant` field
    owners: Callable[[Any], set[str]] | None = None

    def ident(self, request: BaseModel) -> str:
        """What a lookup asked for, for the not-found answer."""
        return next((str(v) for v in request.model_dump().values() if v is not None), "?")


def registry_queries(store: RegistryStore) -> dict[str, Query]:
    def version_owner(version_id: str) -> set[str]:
        return {store.get_version(version_id).summary.tenant}

    return {
        "timeline": Query(
            TimelineQuery,
            lambda q: store.timeline(q.correlation_id),
            lambda r: {e.tenant for e in r.entries},
        ),
        "models.list": Query(
            ModelVersionsQuery,
            lambda q: ModelVersionList(
                versions=store.list_versions(tenant=q.tenant, route=q.route, status=q.status, limit=q.limit)
            ),
        ),
        "models.get": Query(
            ModelVersionQuery, lambda q: store.get_version(q.version_id), lambda r: {r.summary.tenant}
        ),
        "datasets.list": Query(
            DatasetsQuery,
            lambda q: DatasetList(
                datasets=store.list_datasets(tenant=q.tenant, status=q.status, limit=q.limit)
            ),
        ),
        "datasets.get": Query(DatasetQuery, lambda q: store.get_dataset(q.id), lambda r: {r.summary.tenant}),
        "datasets.approved": Query(
            ApprovedDatasetQuery,
            lambda q: store.approved_dataset(q.route, q.tenant),
            lambda r: {str(r.approved.get("tenant"))},
        ),
        "runs.list": Query(
            RunsQuery,
            lambda q: RunList(runs=store.list_runs(tenant=q.tenant, status=q.status, limit=q.limit)),
        ),
        "runs.get": Query(RunQuery, lambda q: store.get_run(q.run_id), lambda r: {r.summary.tenant}),
        "evals.get": Query(
            EvalsQuery, lambda q: store.get_evals(q.version_id), lambda r: version_owner(r.version_id)
        ),
        "cards.get": Query(
            CardQuery, lambda q: store.card(q.version_id), lambda r: version_owner(r.version_id)
        ),
    }


def _not_found(name: str, query: Query, request: BaseModel, tenant: str) -> dict[str, Any]:
    message = f"{name}: {query.ident(request)!r} is not among tenant {tenant!r}'s records"
    return QueryError(error=message, code="not-found").model_dump()


def _answer_sync(name: str, query: Query, request: BaseModel, tenant: str | None) -> dict[str, Any]:
    if tenant is not None and query.owners is None:
        request = request.model_copy(update={"tenant": tenant})
    try:
        result = query.run(request)
        if tenant is not None and query.owners is not None and query.owners(result) - {tenant}:
            return _not_found(name, query, request, tenant)
    except NotFound as error:
        if tenant is not None:  # the same answer as for another tenant's record
            return _not_found(name, query, request, tenant)
        return QueryError(error=str(error), code="not-found").model_dump()
    return dict(result.model_dump(mode="json"))


async def answer(name: str, query: Query, body: Any, tenant: str | None = None) -> dict[str, Any]:
    """The reply to `body`, for every tenant (`tenant` None) or scoped to one."""
    if tenant is not None and name not in TENANT_QUERIES:
        return QueryError(error=f"{name} is not a tenant query", code="bad-request").model_dump()
    try:
        request = query.contract.model_validate(body if isinstance(body, dict) else {})
    except ValidationError as error:
        return QueryError(error=f"bad {query.contract.__name__}: {error}", code="bad-request").model_dump()
    return await asyncio.to_thread(_answer_sync, name, query, request, tenant)
