"""Contamination: word n-gram overlap between training rows and registered eval suites.

A training row is contaminated when it shares one n-gram (13 words by default, as in GPT-3's
decontamination) with any eval item. Eval items shorter than n words (but at least `min_words`)
count when they appear whole inside a training row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Hit:
    suite: str
    item: str


@dataclass
class ContaminationIndex:
    n: int = 13
    min_words: int = 8
    grams: dict[tuple[str, ...], Hit] = field(default_factory=dict)
    short: dict[int, dict[tuple[str, ...], Hit]] = field(default_factory=dict)

    def add(self, suite: str, item: str, text: str) -> None:
        tokens = words(text)
        hit = Hit(suite, item)
        if len(tokens) >= self.n:
            for i in range(len(tokens) - self.n + 1):
                self.grams.setdefault(tuple(tokens[i : i + self.n]), hit)
        elif len(tokens) >= self.min_words:
            self.short.setdefault(len(tokens), {}).setdefault(tuple(tokens), hit)

    def __len__(self) -> int:
        return len(self.grams) + sum(len(v) for v in self.short.values())

    def match(self, text: str) -> Hit | None:
        tokens = words(text)
        if self.grams:
            for i in range(len(tokens) - self.n + 1):
                hit = self.grams.get(tuple(tokens[i : i + self.n]))
                if hit is not None:
                    return hit
        for length, table in self.short.items():
            for i in range(len(tokens) - length + 1):
                hit = table.get(tuple(tokens[i : i + length]))
                if hit is not None:
                    return hit
        return None


def build_index(items: Iterable[tuple[str, str, str]], n: int) -> ContaminationIndex:
    """From (suite name, item id, item text) triples."""
    index = ContaminationIndex(n=n, min_words=min(8, n))
    for suite, item, text in items:
        index.add(suite, item, text)
    return index
