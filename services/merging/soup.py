"""Greedy soup: members ranked by their registry scores, then added best first while the soup improves.

Plain code with no broker. The handler fetches each member's evaluation record and passes a
`score` coroutine (the evaluation service's `suites.score` over NATS in production; any function
in tests), so ranking and the greedy walk are tested on their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.gate_policy import GatePolicy
from schemas.merge import MergeRequested
from schemas.queries import EvalDetail
from schemas.refs import ArtifactRef, Lineage, ModelRef, SoupStep
from services.merging import ops
from services.merging.merges import Merged, Merger, Refused, combined

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranked:
    """A greedy-soup member with its registry score on the ranking suite."""

    index: int  # position in the request's inputs
    version_id: str
    ref: ModelRef
    score: float
    policy: GatePolicy


@dataclass(frozen=True)
class Ranking:
    suite: str
    members: tuple[Ranked, ...]  # best first

    @property
    def best(self) -> Ranked:
        return self.members[0]


Scorer = Callable[[ModelRef, "Ranking"], Awaitable[float]]


def _member(index: int, version: str, ref: ModelRef, detail: EvalDetail, suite: str) -> tuple[Ranked, str]:
    """The member's candidate score on `suite` in its latest evaluation, and that suite's sha256."""
    evaluations = detail.model_dump(mode="json")["evaluations"]
    if not evaluations:
        raise Refused(
            f"input {version} has no evaluation in the registry: greedy-soup ranks members by "
            "their eval scores; wait for its eval.completed"
        )
    suites = evaluations[-1]["suites"]
    found = next((r for r in suites if r["suite"]["name"] == suite), None)
    if found is None:
        names = ", ".join(sorted(r["suite"]["name"] for r in suites))
        raise Refused(f"input {version} was not evaluated on {suite!r}; rank_by one of: {names}")
    score = next(a["metrics"]["score"] for a in found["scores"] if a["arm"] == "candidate")
    return Ranked(index, version, ref, float(score), last_policy(detail)), str(found["suite"]["sha256"])


def last_policy(detail: EvalDetail) -> GatePolicy:
    """The gates a version was last judged by (the defaults when it never was)."""
    decisions = detail.decisions
    return GatePolicy.model_validate(decisions[-1].policy) if decisions else GatePolicy()


def rank(suite: str, members: Sequence[tuple[str, ModelRef, EvalDetail]]) -> Ranking:
    """Members ranked best first by the score the registry recorded for them on one suite.

    Refused when a member was never evaluated on it, when the members were scored on different
    versions of the suite, or (for `target`) when they were trained on different datasets."""
    ranked = [_member(n, version, ref, detail, suite) for n, (version, ref, detail) in enumerate(members)]
    versions = {sha for _, sha in ranked}
    if len(versions) > 1:
        raise Refused(
            f"the members were scored on {len(versions)} different versions of {suite!r}: the "
            "scores are not comparable; re-evaluate them on one version or rank_by another suite"
        )
    if (
        suite == "target"
        and len({m.ref.dataset.dataset_id if m.ref.dataset else None for m, _ in ranked}) > 1
    ):
        raise Refused(
            "the members were trained on different datasets, so their target suites differ; "
            "rank_by a catalogue suite they were all evaluated on"
        )
    return Ranking(suite, tuple(sorted((m for m, _ in ranked), key=lambda m: -m.score)))


def soup_ref(
    event: MergeRequested, ranking: Ranking, artifact: ArtifactRef | None, weights: list[float]
) -> ModelRef:
    best = ranking.best.ref
    ref = combined(best, adapter=None, artifact=artifact, event=event, weights=weights)
    if ranking.suite == "target":
        ref = ref.model_copy(update={"dataset": best.dataset})  # every member's, checked by `rank`
    return ref


async def greedy_soup(
    event: MergeRequested, ranking: Ranking, merger: Merger, work: Path, score: Scorer
) -> Merged:
    """Best member first; each next one joins the uniform soup only if the soup's score rises.

    The first soup's score is the best member's registry score. Each trial soup is streamed
    shard by shard (`ops.soup`), stored, and scored with `score` on the ranking suite."""
    members, best = ranking.members, ranking.best
    folders = [await asyncio.to_thread(merger.fetch, m.ref, work, f"input{m.index}") for m in members]
    kept, current, current_score, peak = [0], best.ref.weights, best.score, 0.0
    steps = [SoupStep(version_id=best.version_id, member_score=best.score, soup_score=best.score, added=True)]
    for n in range(1, len(members)):
        trial, tried = work / f"trial-{n}", [*kept, n]
        try:
            peak = max(
                peak,
                await asyncio.to_thread(
                    ops.soup, [folders[i] for i in tried], [1 / len(tried)] * len(tried), trial
                ),
            )
            artifact = await asyncio.to_thread(merger.store.put_tree, trial)
            trial_score = await score(soup_ref(event, ranking, artifact, []), ranking)
        except (ops.MergeError, Refused) as error:  # a scorer refuses what it cannot score
            raise Refused(f"greedy-soup trial with {members[n].version_id}: {error}") from None
        step = SoupStep(
            version_id=members[n].version_id,
            member_score=members[n].score,
            soup_score=trial_score,
            added=trial_score > current_score,
        )
        log.info(
            "greedy-soup %s: %s %s (%s %.2f → %.2f)",
            event.request_id,
            "adds" if step.added else "skips",
            step.version_id,
            ranking.suite,
            current_score,
            trial_score,
        )
        steps.append(step)
        if step.added:
            kept, current, current_score = tried, artifact, trial_score
    share = {members[i].index: 1 / len(kept) for i in kept}
    lineage = Lineage(
        parents=tuple(members[i].version_id for i in kept),
        peak_memory_mb=peak or None,
        soup_steps=tuple(steps),
        ranked_by=ranking.suite,
    )
    weights = [share.get(i, 0.0) for i in range(len(members))]
    return soup_ref(event, ranking, current, weights), lineage
