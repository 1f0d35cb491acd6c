"""Exact and near-duplicate detection: normalized hashes, then MinHash LSH (datasketch) confirmed
by a token diff.

A near-duplicate is what a person would call the same row: a word or two edited, punctuation or
case changed, on short and long rows alike. Character shingles (`shingle_chars` characters of the
normalized text) keep a one-word edit of a 25-word ticket at Jaccard ≈ 0.85, where word 3-grams
fall to ≈ 0.55. LSH proposes the pairs at `threshold`; each is confirmed only when

- the rows name the same fields: the same numbers, identifiers and mid-sentence title-case
  words that the corpus never writes in lower case (names, places, products), so rows built
  from one template with different fields stay apart however alike the rest of their text is;
- at most `max_edit_fraction` of the longer row's words differ (at least `min_edits` words).

Measured in tests/unit/test_curation_dedupe.py (recall on planted one-word and punctuation edits of
short and long rows, no false merges among template rows with different fields).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+")
_SENTENCE_END = ".!?:;"


def normalize(text: str) -> str:
    """Lower case, words only: 'Hello,  World!' and 'hello world' are the same text."""
    return " ".join(_WORD.findall(text.lower()))


def exact_groups(texts: Sequence[str]) -> list[list[int]]:
    """Groups (≥ 2 members, in index order) of texts equal after normalization."""
    seen: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        seen.setdefault(hashlib.sha256(normalize(text).encode()).hexdigest(), []).append(i)
    return [group for group in seen.values() if len(group) > 1]


def char_shingles(text: str, chars: int) -> list[bytes]:
    flat = normalize(text)
    if len(flat) <= chars:
        return [flat.encode()]
    return [flat[i : i + chars].encode() for i in range(len(flat) - chars + 1)]


COURTESY = frozenset(
    (
        "thank",
        "thanks",
        "please",
        "regards",
        "best",
        "cheers",
        "hi",
        "hello",
        "hey",
        "dear",
        "sincerely",
        "kind",
    )
)
"""Words of greeting and closing, often capitalized mid-line ("… Vera Laurent Thank you.")."""


def common_words(texts: Sequence[str]) -> frozenset[str]:
    """Words the corpus also writes in lower case: a capitalized one is not a name."""
    return frozenset(word for text in texts for word in _WORD.findall(text) if word.islower())


def _after_sentence_end(text: str, start: int) -> bool:
    """The last thing before `start`, whitespace aside, ends a sentence (or a line ends in between)."""
    i = start - 1
    while i >= 0 and text[i].isspace():
        if text[i] == "\n":
            return True
        i -= 1
    return i >= 0 and text[i] in _SENTENCE_END


def fields(text: str, common: frozenset[str] = frozenset()) -> Counter[str]:
    """The row's field-like words: with a digit, or title-case where a sentence does not start and
    the corpus never writes them in lower case (names, places, products)."""
    found: Counter[str] = Counter()
    for match in _WORD.finditer(text):
        word = match.group()
        if any(ch.isdigit() for ch in word):
            found[word.lower()] += 1
            continue
        named = word.istitle() and len(word) > 1  # Ada, Paris; not I, nor a shouted WORD
        lower = word.lower()
        if not named or lower in COURTESY or lower in common:
            continue
        if match.start() > 0 and not _after_sentence_end(text, match.start()):
            found[lower] += 1
    return found


@dataclass(frozen=True)
class NearRule:
    """When two candidate rows are the same row (see the module's docstring)."""

    threshold: float = 0.5
    shingle_chars: int = 5
    max_edit_fraction: float = 0.1
    min_edits: int = 2
    num_perm: int = 128

    def edits_allowed(self, words: int) -> int:
        return max(self.min_edits, int(self.max_edit_fraction * words))


def edited_words(a: str, b: str) -> int:
    """Words replaced, inserted or deleted between the two normalized texts (the longer side's count)."""
    left, right = normalize(a).split(), normalize(b).split()
    changed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=left, b=right, autojunk=False).get_opcodes():
        if tag != "equal":
            changed += max(i2 - i1, j2 - j1)
    return changed


def within_edits(a: str, b: str, rule: NearRule) -> bool:
    words = max(len(normalize(a).split()), len(normalize(b).split()))
    return edited_words(a, b) <= rule.edits_allowed(words)


def same_row(a: str, b: str, rule: NearRule) -> bool:
    """The two rows name the same fields and few of their words differ."""
    return fields(a) == fields(b) and within_edits(a, b, rule)


def near_groups(texts: Sequence[str], rule: NearRule, *, seed: int = 1) -> list[list[int]]:
    """Groups of texts that are the same row by `rule`.

    Rows are first bucketed by their fields (rows naming different fields are never the same row,
    so rows from one template with different values never even become candidates: linear, not
    quadratic, on templated data). Within a bucket, LSH proposes candidates at the rule's Jaccard
    threshold and each is confirmed by its word diff; confirmed pairs are joined with union-find,
    so a group is a connected component.
    """
    common = common_words(texts)
    buckets: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for i, text in enumerate(texts):
        buckets.setdefault(tuple(sorted(fields(text, common).items())), []).append(i)
    groups: list[list[int]] = []
    for members in buckets.values():
        if len(members) > 1:
            found = _near_in_bucket([texts[i] for i in members], rule, seed)
            groups += [[members[i] for i in group] for group in found]
    return sorted(groups)


def _near_in_bucket(texts: Sequence[str], rule: NearRule, seed: int) -> list[list[int]]:
    shingles = [char_shingles(t, rule.shingle_chars) for t in texts]
    hashes = MinHash.bulk(shingles, num_perm=rule.num_perm, seed=seed)
    lsh = MinHashLSH(threshold=rule.threshold, num_perm=rule.num_perm)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, mh in enumerate(hashes):
        for j in lsh.query(mh):
            a, b = find(i), find(j)
            if a != b and within_edits(texts[i], texts[j], rule):
                parent[max(a, b)] = min(a, b)
        lsh.insert(i, mh)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(find(i), []).append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]
