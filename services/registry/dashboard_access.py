"""Who is looking at the dashboard (a key per tenant, or an admin key), and the store behind it."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from services.registry.store import RegistryStore
from services.registry.views import NotFound

ADMIN = "*"  # the tenant of a key that sees every tenant
COOKIE = "tuneline_dashboard"


@dataclass(frozen=True)
class Viewer:
    """Who is looking: one tenant, or an admin (tenant None) who sees them all."""

    tenant: str | None

    def may_see(self, tenant: str | None) -> bool:
        return self.tenant is None or tenant == self.tenant

    def scope(self, asked: str | None) -> str | None:
        """The tenant a listing is filtered by: a tenant's own, whatever it asked for."""
        return asked if self.tenant is None else self.tenant


def tenant_of(keys: dict[str, str], key: str | None) -> str | None:
    """The tenant a dashboard key is for (compared in constant time), or None."""
    found = None
    for known, tenant in keys.items():
        if key is not None and hmac.compare_digest(known.encode(), key.encode()):
            found = tenant
    return found


def viewer(request: Request) -> Viewer:
    """Who sent this request: its bearer key or the page's cookie; 401 without a known key."""
    keys: dict[str, str] = request.app.state.dashboard_keys
    header = request.headers.get("authorization", "")
    key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
    tenant = tenant_of(keys, key or request.cookies.get(COOKIE))
    if tenant is None:
        fix = (
            "send `Authorization: Bearer <dashboard key>` or open /?key=<dashboard key>"
            if keys
            else "this dashboard has no keys: set TUNELINE_REGISTRY_DASHBOARD_KEYS"
        )
        raise HTTPException(status_code=401, detail=f"a dashboard key is required: {fix}")
    return Viewer(None if tenant == ADMIN else tenant)


Seen = Annotated[Viewer, Depends(viewer)]


def _store(request: Request) -> RegistryStore:
    store: RegistryStore = request.app.state.store
    return store


Store = Annotated[RegistryStore, Depends(_store)]


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A store read off the event loop; NotFound is a 404 with the store's words."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except NotFound as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
