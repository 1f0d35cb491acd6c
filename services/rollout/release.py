"""Before a rollout's first step: the registry must hold the version's evaluation and the very verdict
that started it, both published by the evaluation service, and that verdict must have passed.

A `gates.passed` on the bus is a claim; this is the check of the claim against the record. Without
it, a hand-published `gates.passed` rolled out a never-evaluated candidate.
"""

from __future__ import annotations

from schemas.queries import EvalDetail

EVALUATION_SOURCE = "tuneline/evaluation"


class ReleaseNotRecorded(Exception):
    """The registry does not (yet) hold what the check needs: retried, then dead-lettered."""


class ReleaseRefused(Exception):
    """The record contradicts the verdict: the rollout is refused for good."""


def check_release(detail: EvalDetail | None, version: str, verdict_id: str) -> None:
    """Raise unless `detail` shows an evaluation and the passed verdict `verdict_id` of `version`,
    each published by the evaluation service."""
    if detail is None:
        raise ReleaseNotRecorded(f"the registry does not know version {version}")
    decision = next((d for d in detail.decisions if d.ce_id == verdict_id), None)
    if decision is None:
        raise ReleaseNotRecorded(f"the registry has not recorded verdict {verdict_id} of {version}")
    if decision.source != EVALUATION_SOURCE:
        raise ReleaseRefused(
            f"verdict {verdict_id} of {version} was published by {decision.source!r}, not by the "
            f"evaluation service ({EVALUATION_SOURCE}): only evaluation's verdicts start a rollout"
        )
    if not decision.passed:
        raise ReleaseRefused(f"verdict {verdict_id} of {version} is recorded as failed")
    if not any(e.source == EVALUATION_SOURCE for e in detail.evaluations):
        raise ReleaseNotRecorded(
            f"version {version} has no evaluation from the evaluation service; a verdict without "
            "one starts no rollout"
        )
