"""The catalogue of eval suites: the ones shipped in the repo and the ones users register.

A suite is a JSONL file of items (each an object with an `id` and its texts) and a scorer name.
Suites are versioned by content hash. Curation checks training data against every suite listed
here (contamination); evaluation scores candidates on them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.refs import ArtifactRef, EvalSuiteRef
from services.core.artifacts import ArtifactStore
from services.core.ml import lm_eval_tasks

SHIPPED_DIR = Path(__file__).parent / "suites"
REGISTERED_PREFIX = "refs/suites"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

SCORERS = ("exact", "token-f1", "json-schema", "json-match", "regex", "contains", "refusal", "none")
"""Scorer names a suite or an item may use; `lm-eval:<task>` runs an lm-evaluation-harness task
from a directory uploaded with the suite (see services/core/ml/lm_eval_tasks.py)."""
KINDS = ("capability", "safety", "format", "quant-tail", "latency", "custom")
"""What a suite guards: capability (forgetting), safety, format (validity must be 100%), quant-tail
(scored for quantized candidates only), latency, custom (reported, no gate)."""


class SuiteError(Exception):
    pass


@dataclass(frozen=True)
class Suite:
    name: str
    sha256: str
    scorer: str
    origin: str  # "shipped" | "registered"
    data: bytes
    kind: str = "custom"

    @property
    def harness_task(self) -> str | None:
        return lm_eval_tasks.task_name(self.scorer)

    def items(self) -> list[dict[str, Any]]:
        if self.harness_task is not None:
            return lm_eval_tasks.rows(self.data, self.harness_task)
        return parse_items(self.data, self.name)

    def ref(self) -> EvalSuiteRef:
        """Versioned by content: the items, the scorer and the kind."""
        return EvalSuiteRef(name=self.name, sha256=suite_version(self.data, self.scorer, self.kind))


def suite_version(data: bytes, scorer: str, kind: str) -> str:
    return hashlib.sha256(f"{scorer}\n{kind}\n".encode() + data).hexdigest()


def check_scorer(scorer: str, where: str) -> None:
    if scorer in SCORERS or lm_eval_tasks.task_name(scorer):
        return
    raise SuiteError(f"{where}: unknown scorer {scorer!r}; use one of {', '.join(SCORERS)} or lm-eval:<task>")


def parse_items(data: bytes, name: str) -> list[dict[str, Any]]:
    items = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise SuiteError(f"suite {name}, line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("id"), (str, int)):
            raise SuiteError(f"suite {name}, line {number}: each item must be an object with an `id`")
        items.append(item)
    if not items:
        raise SuiteError(f"suite {name}: no items")
    return items


def item_text(item: dict[str, Any]) -> str:
    """Every string in an item except its id and scorer settings, for overlap checks."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                if key not in {"id", "scorer", "schema", "pattern"}:
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(item)
    return "\n".join(parts)


def shipped_suites(directory: Path = SHIPPED_DIR) -> list[Suite]:
    index = json.loads((directory / "index.json").read_text())
    suites = []
    for name, entry in sorted(index.items()):
        data = (directory / entry["file"]).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        suites.append(Suite(name, sha, entry["scorer"], "shipped", data, entry.get("kind", "custom")))
    return suites


def register_suite(store: ArtifactStore, name: str, data: bytes, scorer: str, kind: str = "custom") -> Suite:
    if not _NAME.match(name):
        raise SuiteError(f"suite name {name!r}: use lower-case letters, digits, - and _")
    if kind not in KINDS:
        raise SuiteError(f"suite {name}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    check_scorer(scorer, f"suite {name}")
    task = lm_eval_tasks.task_name(scorer)
    if task is not None:
        try:
            lm_eval_tasks.inspect(data, task)
        except lm_eval_tasks.TaskError as error:
            raise SuiteError(f"suite {name}: {error}") from None
    else:
        for number, item in enumerate(parse_items(data, name), start=1):
            if "scorer" in item:
                check_scorer(str(item["scorer"]), f"suite {name}, item {number}")
    media_type = "application/x-tar" if task else "application/jsonl"
    ref = store.put_bytes(data, media_type=media_type)
    store.put_named_json(
        f"{REGISTERED_PREFIX}/{name}.json",
        {"name": name, "scorer": scorer, "kind": kind, "artifact": ref.model_dump()},
    )
    return Suite(name, ref.sha256, scorer, "registered", data, kind)


def registered_suites(store: ArtifactStore) -> list[Suite]:
    suites = []
    for key in store.list_keys(REGISTERED_PREFIX):
        if not key.endswith(".json"):
            continue
        entry = store.read_named_json(key)
        ref = ArtifactRef.model_validate(entry["artifact"])
        data = store.read_bytes(ref)
        suites.append(
            Suite(entry["name"], ref.sha256, entry["scorer"], "registered", data, entry.get("kind", "custom"))
        )
    return suites


def all_suites(store: ArtifactStore | None) -> list[Suite]:
    shipped = shipped_suites()
    names = {s.name for s in shipped}
    extra = [s for s in registered_suites(store) if s.name not in names] if store else []
    return shipped + extra
