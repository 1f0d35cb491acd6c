"""Exact and near-duplicate detection: normalized hashes, then MinHash LSH (datasketch)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Lower case, words only: 'Hello,  World!' and 'hello world' are the same text."""
    return " ".join(_WORD.findall(text.lower()))


def exact_groups(texts: Sequence[str]) -> list[list[int]]:
    """Groups (≥ 2 members, in index order) of texts equal after normalization."""
    seen: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        seen.setdefault(hashlib.sha256(normalize(text).encode()).hexdigest(), []).append(i)
    return [group for group in seen.values() if len(group) > 1]


def _shingles(text: str, words: int) -> list[bytes]:
    tokens = normalize(text).split()
    if len(tokens) <= words:
        return [" ".join(tokens).encode()]
    return [" ".join(tokens[i : i + words]).encode() for i in range(len(tokens) - words + 1)]


def near_groups(
    texts: Sequence[str],
    *,
    threshold: float,
    num_perm: int = 128,
    shingle_words: int = 3,
    seed: int = 1,
) -> list[list[int]]:
    """Groups of texts whose estimated Jaccard similarity reaches `threshold`.

    LSH proposes candidates; each candidate pair is confirmed on its MinHash estimate, and
    confirmed pairs are joined with union-find, so a group is a connected component.
    """
    if len(texts) < 2:
        return []
    hashes = MinHash.bulk([_shingles(t, shingle_words) for t in texts], num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, mh in enumerate(hashes):
        for j in lsh.query(mh):
            if hashes[j].jaccard(mh) >= threshold:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        lsh.insert(i, mh)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(find(i), []).append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]
