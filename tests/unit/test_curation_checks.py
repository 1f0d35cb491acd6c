"""The audit's building blocks with known answers: PII, kappa, duplicates, contamination, formats."""

from __future__ import annotations

import pytest

from services.curation import pii
from services.curation.agreement import cohen_kappa, fleiss_kappa
from services.curation.contamination import build_index
from services.curation.dedupe import NearRule, exact_groups, near_groups
from services.curation.rows import FormatError, detect_kind, parse_row


@pytest.mark.parametrize(
    ("text", "kind", "placeholder"),
    [
        ("write to jane.doe@example.com today", "email", "[EMAIL]"),
        ("call +1 (555) 123-4567 after six", "phone", "[PHONE]"),
        ("my number is 020 7946 0958", "phone", "[PHONE]"),
        ("card 4111 1111 1111 1111 expires soon", "credit_card", "[CREDIT_CARD]"),
        ("pay to DE89 3704 0044 0532 0130 00 now", "iban", "[IBAN]"),
        ("server 192.168.1.20 is down", "ip_address", "[IP_ADDRESS]"),
        ("host fe80::1ff:fe23:4567:890a is down", "ip_address", "[IP_ADDRESS]"),
        ("key AKIAIOSFODNN7EXAMPLE leaked", "secret", "[SECRET]"),
        ("token ghp_" + "a" * 36 + " leaked", "secret", "[SECRET]"),
        ("use api_key=abcd1234efgh5678 here", "secret", "[SECRET]"),
    ],
)
def test_each_pii_type_is_found_counted_and_redacted(text: str, kind: str, placeholder: str) -> None:
    clean, counts = pii.redact(text)
    assert counts == {kind: 1}
    assert placeholder in clean


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",  # one digit off: not a card
        "IBAN DE89 3704 0044 0532 0130 01 fails mod 97",
        "version 1.2.3 on 2024-01-15 at 12:30:45",
        "order 1234567890123 shipped",
        "999.1.1.1 is not an address",
    ],
)
def test_lookalikes_that_fail_their_checksum_or_syntax_are_left_alone(text: str) -> None:
    assert pii.redact(text) == (text, {})


def test_luhn_and_iban_checksums() -> None:
    assert pii.luhn_ok("4111111111111111") and not pii.luhn_ok("4111111111111112")
    assert pii.iban_ok("GB82 WEST 1234 5698 7654 32") and not pii.iban_ok("GB82 WEST 1234 5698 7654 33")


def test_cohen_kappa_textbook_value() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 → κ = 0.4
    first = ["y"] * 25 + ["n"] * 25
    second = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)


def test_fleiss_kappa_textbook_value() -> None:
    # Fleiss (1971) worked example as given on Wikipedia: 10 items, 14 raters, 5 categories → 0.210
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    ratings = [[c for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings) == pytest.approx(0.2099, abs=1e-4)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[1, 1], [1, 1, 1]])


def test_exact_and_near_duplicate_groups() -> None:
    base = (
        "the quick brown fox jumps over the lazy dog near the river bank on a sunny day while the "
        "farmer counts his sheep and the children play football in the green meadow behind the old mill"
    )
    words = base.split()
    half_changed = " ".join(w if i % 3 else "zzz" for i, w in enumerate(words))
    texts = [
        base,
        "completely different words about invoices refunds and a broken desk lamp order",
        base.upper() + "!",  # exact after normalization
        base + " again",  # near: one word more (Jaccard about 0.97)
        half_changed,  # every third word replaced: a different row
    ]
    assert exact_groups(texts) == [[0, 2]]
    assert near_groups(texts, NearRule()) == [[0, 2, 3]]


def test_contamination_index_matches_13_grams_and_whole_short_items() -> None:
    long_item = "what is the boiling point of water at sea level in degrees celsius exactly please"
    index = build_index(
        [
            ("capability", "q1", long_item),
            ("capability", "q2", "name the largest planet in our solar system"),
        ],
        13,
    )
    assert index.match("Trivia: " + long_item.upper() + " thanks").item == "q1"  # type: ignore[union-attr]
    assert index.match("Q: name the largest planet in our solar system? A: Jupiter").item == "q2"  # type: ignore[union-attr]
    assert index.match("what is the boiling point of milk at sea level") is None


def test_format_detection_and_row_schema_findings_name_row_and_field() -> None:
    assert detect_kind([{"prompt": "a", "completion": "b"}]) == "sft"
    assert detect_kind([{"messages": []}]) == "sft"
    assert detect_kind([{"prompt": "a", "chosen": "b", "rejected": "c"}]) == "preference"
    assert detect_kind([{"prompt": "a", "completion": "b", "label": True}]) == "feedback"
    with pytest.raises(FormatError, match="cannot tell the data format"):
        detect_kind([{"question": "a", "answer": "b"}])

    row, findings = parse_row({"prompt": "hi", "completion": 3}, "sft", source="s", number=7, split="train")
    assert row is None and findings[0].row == 7 and findings[0].field == "completion"
    assert "must be a string" in findings[0].message
    row, findings = parse_row(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]},
        "sft", source="s", number=3, split="train",
    )  # fmt: skip
    assert row is None and findings[0].field == "messages[1].role"
    row, findings = parse_row(
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        "preference",
        source="s",
        number=2,
        split="train",
    )
    assert row is None and findings[0].field == "rejected"
    row, _ = parse_row(
        {"prompt": "p", "completion": "c", "label": "bad"}, "feedback", source="s", number=1, split="train"
    )
    assert row is not None and row.data == {"prompt": "p", "completion": "c", "label": False}
