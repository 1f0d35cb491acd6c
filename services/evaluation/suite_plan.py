"""The suites one evaluation runs: the dataset's held-out split, its canaries, and the catalogue."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from schemas.gate_policy import GatePolicy
from schemas.refs import EvalSuiteRef
from services.core.ml.suite_catalogue import Suite, suite_version
from services.evaluation.scoring import parse_json

Messages = list[dict[str, str]]
JSON_SCORERS = ("json-match", "json-schema")


class PlanError(Exception):
    """The candidate's dataset cannot be turned into a target suite; the message says why."""


@dataclass
class SuitePlan:
    ref: EvalSuiteRef
    kind: str
    scorer: str
    items: list[dict[str, Any]]
    max_new_tokens: int
    few_shot: int = 0
    harness: Suite | None = None  # an lm-evaluation-harness task, scored by lm-eval itself
    parent: int | None = None  # the parent (index into the candidate's parents) it is compared with
    budgets: list[int] | None = None  # per-item answer budgets (tokens), else max_new_tokens for all

    def budget(self) -> int | list[int]:
        return self.budgets if self.budgets is not None else self.max_new_tokens

    def messages(self, item: dict[str, Any]) -> Messages:
        if isinstance(item.get("messages"), list):
            return [dict(m) for m in item["messages"]]
        return [{"role": "user", "content": str(item["prompt"])}]

    def few_shot_messages(self, index: int) -> Messages:
        """The item's prompt after `few_shot` other held-out items with their answers."""
        n = len(self.items)
        shots: Messages = []
        for offset in range(1, min(self.few_shot, n - 1) + 1):
            example = self.items[(index + offset) % n]
            shots += [*self.messages(example), {"role": "assistant", "content": str(example["answer"])}]
        return shots + self.messages(self.items[index])


def _prompt_messages(value: Any) -> Messages:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    raise PlanError(f"a prompt must be text or a list of messages, got {type(value).__name__}")


def target_items(rows: list[dict[str, Any]], data_format: str) -> list[dict[str, Any]]:
    """(prompt messages, reference answer) per held-out row, by the dataset's format."""
    items = []
    for number, row in enumerate(rows, start=1):
        if data_format == "sft":
            messages = row["messages"]
            last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
            if last is None or last == 0:
                continue
            prompt, answer = _prompt_messages(messages[:last]), messages[last]["content"]
        elif data_format == "preference":
            prompt, answer = _prompt_messages(row["prompt"]), row["chosen"]
        elif data_format == "feedback":
            if not row.get("label"):
                continue  # an undesirable completion is no reference answer
            prompt, answer = _prompt_messages(row["prompt"]), row["completion"]
        else:
            raise PlanError(
                f"dataset format {data_format!r} has no target scorer (sft, preference, feedback)"
            )
        if not isinstance(answer, str):
            answer = answer[-1]["content"] if isinstance(answer, list) else str(answer)
        items.append({"id": f"heldout-{number}", "messages": prompt, "answer": answer})
    return items


def target_scorer(policy: GatePolicy, items: list[dict[str, Any]]) -> str:
    if policy.target_scorer != "auto":
        return policy.target_scorer
    if items and all(isinstance(parse_json(str(i["answer"]))[1], dict) for i in items):
        return "json-match"
    return "token-f1"


def target_plan(eval_split: bytes, data_format: str, policy: GatePolicy) -> SuitePlan:
    """The held-out split as a suite; its token budget (max_new_tokens) is set by the caller."""
    rows = [json.loads(line) for line in eval_split.decode("utf-8").splitlines() if line.strip()]
    items = target_items(rows, data_format)
    if not items:
        raise PlanError("the dataset's held-out split has no rows with a reference answer")
    scorer = target_scorer(policy, items)
    if scorer == "json-schema" and policy.target_schema is None:
        raise PlanError("target_scorer json-schema needs gates.target_schema (a JSON Schema)")
    if scorer == "regex" and policy.target_pattern is None:
        raise PlanError("target_scorer regex needs gates.target_pattern")
    for item in items:
        if policy.target_schema is not None:
            item["schema"] = policy.target_schema
        if policy.target_pattern is not None:
            item["pattern"] = policy.target_pattern
    config = json.dumps(
        {"scorer": scorer, "schema": policy.target_schema, "pattern": policy.target_pattern}, sort_keys=True
    )
    sha = suite_version(eval_split + config.encode(), scorer, "target")
    return SuitePlan(
        ref=EvalSuiteRef(name="target", sha256=sha),
        kind="target",
        scorer=scorer,
        items=items,
        max_new_tokens=0,
        few_shot=policy.few_shot,
    )


def memorization_plan(canaries: list[dict[str, str]]) -> SuitePlan | None:
    if not canaries:
        return None
    items = [
        {"id": f"canary-{n}", "prompt": c["prompt"], "secret": c["secret"]}
        for n, c in enumerate(canaries, start=1)
    ]
    data = json.dumps(items, sort_keys=True).encode()
    return SuitePlan(
        ref=EvalSuiteRef(name="memorization", sha256=suite_version(data, "canary", "memorization")),
        kind="memorization",
        scorer="canary",
        items=items,
        max_new_tokens=48,
    )


SAFETY_TOKENS = 40


def catalogue_plan(suite: Suite) -> SuitePlan:
    """A catalogue suite; safety answers need only their opening, others get a budget from the caller
    (max_new_tokens 0), and lm-eval tasks carry their directory instead of items."""
    if suite.harness_task is not None:
        return SuitePlan(
            ref=suite.ref(), kind=suite.kind, scorer=suite.scorer, items=[], max_new_tokens=0, harness=suite
        )
    budget = SAFETY_TOKENS if suite.kind == "safety" else 0
    return SuitePlan(
        ref=suite.ref(), kind=suite.kind, scorer=suite.scorer, items=suite.items(), max_new_tokens=budget
    )


def sampled(plan: SuitePlan, size: int, purpose: str = "") -> SuitePlan:
    """A seeded sample of `size` items of the plan, stratified by (category, label): each stratum
    keeps its share (largest remainders get the leftover places). The sample is a suite of its
    own: its hash covers the chosen items, so cached baselines never mix samples. `purpose` seeds
    a different sample (the checkpoint screen's is not the gates')."""
    if size >= len(plan.items):
        return plan
    strata: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in plan.items:
        strata.setdefault((str(item.get("category", "")), str(item.get("label", ""))), []).append(item)
    total = len(plan.items)
    quotas = {key: size * len(rows) // total for key, rows in strata.items()}
    leftover = size - sum(quotas.values())
    by_remainder = sorted(strata, key=lambda key: (-(size * len(strata[key]) % total), key))
    for key in by_remainder[:leftover]:
        quotas[key] += 1
    rng = random.Random(f"{purpose}{plan.ref.name}:{size}")
    chosen = {id(item) for key, rows in strata.items() for item in rng.sample(rows, quotas[key])}
    return _subset(plan, [item for item in plan.items if id(item) in chosen])


def without(plan: SuitePlan, ids: set[str]) -> SuitePlan:
    """The plan less some items (those a checkpoint screen read), a suite of its own."""
    return _subset(plan, [item for item in plan.items if str(item["id"]) not in ids], "without")


def labelled(plan: SuitePlan, label: str) -> SuitePlan:
    """Only the items with this label (a safety suite's harmful prompts)."""
    return _subset(plan, [item for item in plan.items if item.get("label") == label], label)


def _subset(plan: SuitePlan, items: list[dict[str, Any]], how: str = "") -> SuitePlan:
    ids = [str(i["id"]) for i in items]
    data = json.dumps([plan.ref.sha256, *([how] if how else []), ids]).encode()
    ref = EvalSuiteRef(name=plan.ref.name, sha256=suite_version(data, plan.scorer, plan.kind))
    return dataclasses.replace(plan, ref=ref, items=items, budgets=None)


def content_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
