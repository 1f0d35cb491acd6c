"""Row formats: detect SFT / preference / feedback data, validate each row, canonicalize it.

Canonical curated rows (what training reads):
- sft:        {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
              (prompt/completion rows become a user and an assistant message)
- preference: {"prompt": str, "chosen": str, "rejected": str}
- feedback:   {"prompt": str, "completion": str, "label": bool}
Besides its format's fields a row may carry `id`, `system` (sft prompt/completion) and
`annotations` (several raters' labels: a list in rater order or a {rater: label} object).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.dataset import Finding

Kind = Literal["sft", "preference", "feedback"]
ROLES = ("system", "user", "assistant")
COMMON = {"id", "annotations"}
FIELDS: dict[str, set[str]] = {
    "sft-pc": {"prompt", "completion", "system"},
    "sft-chat": {"messages"},
    "preference": {"prompt", "chosen", "rejected"},
    "feedback": {"prompt", "completion", "label"},
}


class FormatError(Exception):
    """The data's format cannot be told from its columns."""


@dataclass
class Row:
    """One row of a source, canonicalized, with where it came from."""

    source: str
    number: int  # 1-based row number in its source
    split: str
    kind: Kind
    data: dict[str, Any]
    annotations: tuple[tuple[str, Any], ...] = ()
    flags: set[str] = field(default_factory=set)

    def texts(self) -> Iterable[tuple[str, str]]:
        """(field path, text) for every text the row holds."""
        if self.kind == "sft":
            for i, message in enumerate(self.data["messages"]):
                yield f"messages[{i}].content", message["content"]
        else:
            for key in ("prompt", "completion", "chosen", "rejected"):
                if key in self.data:
                    yield key, self.data[key]

    def prompt_text(self) -> str:
        if self.kind == "sft":
            return "\n".join(m["content"] for m in self.data["messages"] if m["role"] != "assistant")
        return str(self.data["prompt"])

    def response_texts(self) -> list[tuple[str, str]]:
        """(field path, text) of what the model is trained to say."""
        if self.kind == "sft":
            return [
                (f"messages[{i}].content", m["content"])
                for i, m in enumerate(self.data["messages"])
                if m["role"] == "assistant"
            ]
        if self.kind == "preference":
            return [("chosen", self.data["chosen"]), ("rejected", self.data["rejected"])]
        return [("completion", self.data["completion"])]

    def full_text(self) -> str:
        return "\n".join(text for _, text in self.texts())

    def canonical_json(self) -> str:
        return json.dumps(self.data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def detect_kind(samples: Iterable[Mapping[str, Any]]) -> Kind:
    keys: set[str] = set()
    for sample in samples:
        keys |= set(sample)
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"prompt", "completion", "label"} <= keys:
        return "feedback"
    if "messages" in keys or {"prompt", "completion"} <= keys:
        return "sft"
    raise FormatError(
        f"cannot tell the data format from its columns {sorted(keys)}; expected prompt/completion or "
        "messages (sft), prompt/chosen/rejected (preference) or prompt/completion/label (feedback); "
        "set curation.data_format in the recipe to say which"
    )


def _text(raw: Mapping[str, Any], key: str, problems: list[tuple[str, str]]) -> str | None:
    value = raw.get(key)
    if value is None:
        problems.append((key, "missing"))
        return None
    if not isinstance(value, str):
        problems.append((key, f"must be a string, got {type(value).__name__}"))
        return None
    return value


def _annotations(raw: Mapping[str, Any], problems: list[tuple[str, str]]) -> tuple[tuple[str, Any], ...]:
    value = raw.get("annotations")
    if value is None:
        return ()
    if isinstance(value, list):
        pairs = [(f"rater{i + 1}", label) for i, label in enumerate(value)]
    elif isinstance(value, dict):
        pairs = sorted((str(k), v) for k, v in value.items())
    else:
        problems.append(("annotations", "must be a list of labels or a {rater: label} object"))
        return ()
    if any(isinstance(label, (dict, list)) for _, label in pairs):
        problems.append(("annotations", "each label must be a string, number or boolean"))
        return ()
    return tuple(pairs)


def _chat(messages: Any, problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    """An SFT row in chat form: {role, content} messages ending with the assistant's, one user's at least."""
    if not isinstance(messages, list) or not messages:
        problems.append(("messages", "must be a non-empty list of {role, content} objects"))
        return None
    clean = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append((where, "must be an object with role and content"))
            return None
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append((f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}"))
            return None
        if not isinstance(content, str):
            problems.append((f"{where}.content", "missing or not a string"))
            return None
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        problems.append((f"messages[{len(clean) - 1}].role", "the last message must be the assistant's"))
        return None
    if not any(m["role"] == "user" for m in clean):
        problems.append(("messages", "needs at least one user message"))
        return None
    return {"messages": clean}


def _sft(raw: Mapping[str, Any], problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    if "messages" in raw:
        return _chat(raw["messages"], problems)
    prompt = _text(raw, "prompt", problems)
    completion = _text(raw, "completion", problems)
    system = raw.get("system")
    if system is not None and not isinstance(system, str):
        problems.append(("system", "must be a string"))
        return None
    if prompt is None or completion is None:
        return None
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return {"messages": messages}


def _preference(raw: Mapping[str, Any], problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    values = {key: _text(raw, key, problems) for key in ("prompt", "chosen", "rejected")}
    if any(v is None for v in values.values()):
        return None
    if values["chosen"] == values["rejected"]:
        problems.append(("rejected", "is identical to chosen: the pair teaches nothing"))
        return None
    return dict(values)


def _feedback(raw: Mapping[str, Any], problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    prompt = _text(raw, "prompt", problems)
    completion = _text(raw, "completion", problems)
    label = raw.get("label")
    if isinstance(label, bool):
        good = label
    elif label in (0, 1):
        good = bool(label)
    elif isinstance(label, str) and label.lower() in {"true", "false", "good", "bad"}:
        good = label.lower() in {"true", "good"}
    else:
        problems.append(("label", f"must be true/false (or 1/0, good/bad), got {label!r}"))
        return None
    if prompt is None or completion is None:
        return None
    return {"prompt": prompt, "completion": completion, "label": good}


PARSERS = {"sft": _sft, "preference": _preference, "feedback": _feedback}


def parse_row(
    raw: Any, kind: Kind, *, source: str, number: int, split: str
) -> tuple[Row | None, list[Finding]]:
    """Validate one raw row; findings name the row number and the field."""
    if not isinstance(raw, dict):
        return None, [
            Finding(
                check="schema",
                source=source,
                row=number,
                message=f"row {number}: must be an object, got {type(raw).__name__}",
            )
        ]
    problems: list[tuple[str, str]] = []
    annotations = _annotations(raw, problems)
    data = PARSERS[kind](raw, problems)
    findings = [
        Finding(
            check="schema",
            source=source,
            row=number,
            field=field_name,
            message=f"row {number}, field {field_name!r}: {problem}",
        )
        for field_name, problem in problems
    ]
    if data is None or problems:
        return None, findings
    return Row(source, number, split, kind, data, annotations), findings
