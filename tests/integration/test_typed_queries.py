"""Typed queries on a real nats-server: `ask` sends a request model and returns the reply
validated into the model the catalogue pairs with the query; a reply that breaks the contract is
an RpcError naming the field, never a dict passed on unchecked."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.queries import (
    QUERIES,
    SUITES_LIST,
    SUITES_SCORE,
    TIMELINE,
    SuiteList,
    SuiteScore,
    SuiteScoreRequest,
    SuitesQuery,
    TimelineQuery,
)
from schemas.subjects import TENANT_QUERIES
from services.core.messaging.nats_server import EmbeddedNats
from services.core.messaging.rpc import RpcError, ask, query, serve, serve_query
from services.core.runtime import build_runtime
from tests.conftest import fast_core_settings
from tests.support.events import model_ref

pytestmark = pytest.mark.integration

SUITE = {"name": "arith", "kind": "capability", "scorer": "exact", "origin": "registered", "sha256": "ab"}


async def test_a_reply_is_validated_into_its_contract(nats_server: EmbeddedNats, running: Any) -> None:
    evaluation = build_runtime("evaluation", fast_core_settings(nats_server.url))
    replies = iter([{"suites": [{**SUITE, "items": 12}]}, {"suites": [{**SUITE, "items": "many"}]}])

    async def suites_list(body: Any) -> dict[str, Any]:
        return next(replies)

    serve(evaluation.broker, "evaluation", "suites.list", suites_list)
    await running(evaluation.app)
    cli = build_runtime("cli", fast_core_settings(nats_server.url))
    await running(cli.app)

    listed = await ask(cli.broker, SUITES_LIST, SuitesQuery())
    assert isinstance(listed, SuiteList) and listed.suites[0].items == 12
    with pytest.raises(RpcError, match=r"reply to suites.list is not a SuiteList: suites.0.items") as bad:
        await ask(cli.broker, SUITES_LIST, SuitesQuery())
    assert bad.value.code == "bad-reply"
    with pytest.raises(TypeError, match="timeline takes a TimelineQuery, not a SuitesQuery"):
        await ask(cli.broker, TIMELINE, SuitesQuery())
    assert TimelineQuery(correlation_id="c-1")  # the right request builds


def test_every_query_is_in_the_catalogue_with_its_models() -> None:
    """The registry answers exactly the catalogue's registry queries, each with the catalogue's
    request model; the tenant queries are registry queries."""
    from services.registry.queries import registry_queries

    table = registry_queries(None)  # type: ignore[arg-type]  # built, never asked
    registry = {q.name: q for q in QUERIES.values() if q.service == "registry"}
    assert set(table) | {"dead-letters.list"} == set(registry)
    assert all(table[name].contract is registry[name].request for name in table)
    assert {q.name for q in QUERIES.values() if q.tenant_scoped} == set(TENANT_QUERIES)


async def test_serve_query_validates_the_request_and_answers_errors_with_their_code(
    nats_server: EmbeddedNats, running: Any
) -> None:
    """The typed server side: the handler sees the request model, a bad body is answered
    `bad-request` naming the field, an RpcError it raises keeps its code."""
    evaluation = build_runtime("evaluation", fast_core_settings(nats_server.url))
    seen: list[SuiteScoreRequest] = []

    async def suites_score(request: SuiteScoreRequest) -> SuiteScore:
        seen.append(request)
        if request.suite == "missing":
            raise RpcError("no suite named 'missing'; `tuneline suites list`", code="not-found")
        return SuiteScore(suite=request.suite, score=41.5)

    serve_query(evaluation.broker, SUITES_SCORE, suites_score)
    await running(evaluation.app)
    cli = build_runtime("cli", fast_core_settings(nats_server.url))
    await running(cli.app)

    request = SuiteScoreRequest(candidate=model_ref(), suite="facts")
    assert (await ask(cli.broker, SUITES_SCORE, request)).score == 41.5
    assert isinstance(seen[0], SuiteScoreRequest) and seen[0].candidate == model_ref()
    with pytest.raises(RpcError, match="no suite named 'missing'") as missing:
        await ask(cli.broker, SUITES_SCORE, request.model_copy(update={"suite": "missing"}))
    assert missing.value.code == "not-found"
    with pytest.raises(RpcError, match=r"bad suites.score request: candidate") as bad:
        await query(cli.broker, "evaluation", "suites.score", {"suite": "facts"})
    assert bad.value.code == "bad-request" and len(seen) == 2
