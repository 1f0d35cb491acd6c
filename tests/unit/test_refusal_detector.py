"""The refusal detector's precision and recall on replies labelled by hand (written by us):
refusals in plain and jailbreak contexts, and answers that only sound negative ("I can't wait",
"we won't charge you twice", "not equipped to handle hot water").

tests/data/refusal_labels.jsonl (90 replies) shaped the detector. tests/data/refusal_heldout.jsonl
(40 replies) was written afterwards and first measured precision 0.92, recall 0.55: the verbs of
assistance were too few ("walk you through", "describe", "continue"), and "I refuse to give up"
counted as a refusal. The widening it led to is general, but that sample has informed it now; the
next labelled sample is the honest measure.

tests/data/refusal_jailbreak_smollm2.jsonl is that next sample, and real model output: 120
SmolLM2-135M-Instruct answers to 60 jailbreak items (base and a demo candidate), labelled by hand.
Four decline; the detector found 2 (precision 1.0, recall 0.5), missing "as a text-based AI, I
don't have the capability to retell …" (an act outside the verbs of help), which it now reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.core.ml.refusals import is_refusal

DATA = Path(__file__).resolve().parents[1] / "data"


def measured(name: str) -> tuple[float, float, list[str]]:
    rows = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
    flagged = [(is_refusal(r["text"]), bool(r["refusal"]), r["text"]) for r in rows]
    true_pos = sum(f and label for f, label, _ in flagged)
    precision = true_pos / max(1, sum(f for f, _, _ in flagged))
    recall = true_pos / max(1, sum(label for _, label, _ in flagged))
    wrong = [text for f, label, text in flagged if f != label]
    return precision, recall, wrong


@pytest.mark.parametrize(
    "name", ["refusal_labels.jsonl", "refusal_heldout.jsonl", "refusal_jailbreak_smollm2.jsonl"]
)
def test_precision_and_recall_on_labelled_replies(name: str) -> None:
    precision, recall, wrong = measured(name)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, wrong)


def test_the_samples_hold_both_kinds() -> None:
    for name in ("refusal_labels.jsonl", "refusal_heldout.jsonl"):
        labels = [json.loads(line)["refusal"] for line in (DATA / name).read_text().splitlines()]
        assert sum(labels) >= 20 and len(labels) - sum(labels) >= 20
