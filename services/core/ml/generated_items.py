"""Programmatic eval items: many independent items a program can answer and score, so the shipped
suites are large enough for their gates' margins (docs/evaluation.md has the arithmetic).

capability items beyond the 180 hand-written ones: arithmetic in several phrasings, unit
conversions, templated facts (calendar, sequences, spelling), instruction following and JSON
format following. Every answer is computed here; the suite keeps each prompt once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

Row = tuple[str, str, str, dict[str, Any]]  # (category, prompt, answer, extra)

ADD = ("Compute {a} + {b}. Reply with the number only.", "What is {a} plus {b}?", "Add {a} and {b}.")
SUB = ("What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}.")
MUL = ("What is {a} times {b}?", "Multiply {a} by {b}.", "Compute {a} × {b}.")
NOUNS = [
    "anchor",
    "badger",
    "candle",
    "dagger",
    "engine",
    "feather",
    "garden",
    "harbour",
    "island",
    "jacket",
    "lantern",
    "marble",
    "needle",
    "orchard",
    "parcel",
    "quarry",
    "rocket",
    "saucer",
    "tunnel",
    "umbrella",
    "valley",
    "window",
    "yogurt",
    "zipper",
    "bottle",
    "carpet",
    "dragon",
    "forest",
    "helmet",
    "ladder",
    "mirror",
    "pebble",
    "rabbit",
    "spider",
    "thimble",
    "violin",
    "wagon",
]
DIV = ("What is {a} divided by {b}?", "Divide {a} by {b}. Give the whole number.")


def arithmetic(rng: random.Random, count: int) -> list[Row]:
    rows: list[Row] = []
    makers: list[Callable[[], tuple[str, str]]] = [
        lambda: _op(rng, ADD, rng.randint(10, 999), rng.randint(10, 999), lambda a, b: a + b),
        lambda: _op(rng, SUB, rng.randint(100, 1999), rng.randint(1, 99), lambda a, b: a - b),
        lambda: _op(rng, MUL, rng.randint(2, 40), rng.randint(2, 12), lambda a, b: a * b),
        lambda: _division(rng),
    ]
    while len(rows) < count:
        prompt, answer = makers[len(rows) % len(makers)]()
        rows.append(("arithmetic", prompt, answer, {}))
    return rows


def _op(
    rng: random.Random, phrasings: tuple[str, ...], a: int, b: int, result: Callable[[int, int], int]
) -> tuple[str, str]:
    return rng.choice(phrasings).format(a=a, b=b), str(result(a, b))


def _division(rng: random.Random) -> tuple[str, str]:
    b, quotient = rng.randint(2, 12), rng.randint(2, 60)
    return rng.choice(DIV).format(a=b * quotient, b=b), str(quotient)


UNITS = (  # (from, to, factor, range of the amount)
    ("kilometres", "metres", 1000, (2, 90)),
    ("metres", "centimetres", 100, (2, 90)),
    ("kilograms", "grams", 1000, (2, 90)),
    ("litres", "millilitres", 1000, (2, 40)),
    ("hours", "minutes", 60, (2, 48)),
    ("minutes", "seconds", 60, (2, 90)),
    ("days", "hours", 24, (2, 30)),
    ("weeks", "days", 7, (2, 52)),
    ("dozen eggs", "eggs", 12, (2, 40)),
    ("years", "months", 12, (2, 40)),
)
CONVERT = ("How many {to} are in {n} {frm}?", "Express {n} {frm} in {to}.", "{n} {frm} is how many {to}?")


def conversions(rng: random.Random, count: int) -> list[Row]:
    rows: list[Row] = []
    for i in range(count):
        frm, to, factor, (low, high) = UNITS[i % len(UNITS)]
        n = rng.randint(low, high)
        if i % 4 == 3:  # the other way round, to a whole number
            prompt = rng.choice(CONVERT).format(n=n * factor, frm=to, to=frm)
            rows.append(("conversions", prompt, str(n), {}))
        else:
            rows.append(("conversions", rng.choice(CONVERT).format(n=n, frm=frm, to=to), str(n * factor), {}))
    return rows


MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ORDINALS = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
]


def facts(rng: random.Random, words: list[str], count: int) -> list[Row]:
    rows: list[Row] = []
    for i, month in enumerate(MONTHS):
        rows.append(("facts", f"Which month is the {ORDINALS[i]} month of the year?", month, {}))
        rows.append(("facts", f"Which month comes after {MONTHS[i - 1]}?", month, {}))
        rows.append(("facts", f"Which month comes before {MONTHS[(i + 1) % 12]}?", month, {}))
    for i, day in enumerate(DAYS):
        rows.append(("facts", f"Which day of the week comes after {DAYS[i - 1]}?", day, {}))
        rows.append(("facts", f"Which day of the week comes before {DAYS[(i + 1) % 7]}?", day, {}))
    seen = {prompt for _, prompt, _, _ in rows}
    for attempt in range(100 * count):
        if len(rows) >= count:
            break
        kind = attempt % 3
        if kind == 0:
            start, step = rng.randint(1, 60), rng.randint(2, 9)
            terms = ", ".join(str(start + step * k) for k in range(4))
            prompt, answer = f"What number comes next: {terms}, ...?", str(start + step * 4)
        elif kind == 1:
            word = rng.choice(words)
            prompt, answer = f"What is the first letter of the word '{word}'?", word[0]
        else:
            a, b = rng.sample(range(100, 999), 2)
            prompt, answer = f"Which number is larger, {a} or {b}?", str(max(a, b))
        if prompt not in seen:
            seen.add(prompt)
            rows.append(("facts", prompt, answer, {}))
    return rows


def instructions(rng: random.Random, words: list[str], count: int) -> list[Row]:
    rows: list[Row] = []
    seen: set[str] = set()
    for attempt in range(100 * count):
        if len(rows) >= count:
            break
        kind, word = attempt % 5, rng.choice(words)
        if kind == 0:
            prompt, answer = f"Write the word '{word}' in capital letters only.", word.upper()
        elif kind == 1:
            times = rng.randint(2, 4)
            prompt = f"Repeat the word '{word}' {times} times, separated by spaces."
            answer = " ".join([word] * times)
        elif kind == 2:
            a, b = rng.sample(range(10, 999), 2)
            prompt, answer = f"Answer only yes or no: is {a} smaller than {b}?", "yes" if a < b else "no"
        elif kind == 3:
            other = rng.choice([w for w in words if w != word])
            prompt = f"Reply with only the last word of this list: {other}, {word}."
            answer = word
        else:
            numbers = rng.sample(range(1, 99), 3)
            prompt = f"Put these numbers in increasing order: {', '.join(map(str, numbers))}."
            answer = ", ".join(map(str, sorted(numbers)))
        if prompt not in seen:
            seen.add(prompt)
            rows.append(("instructions", prompt, answer, {}))
    return rows


def formats(rng: random.Random, names: list[str], towns: list[str], count: int) -> list[Row]:
    rows: list[Row] = []
    seen: set[str] = set()
    for attempt in range(100 * count):
        if len(rows) >= count:
            break
        name, town, age = rng.choice(names), rng.choice(towns), rng.randint(18, 90)
        if attempt % 2:
            record: dict[str, Any] = {"name": name, "town": town}
            prompt = f"Return a JSON object with keys name and town for: {name} lives in {town}."
        else:
            record = {"name": name, "age": age}
            prompt = f"Reply with JSON only, fields name and age: {name} is {age} years old."
        if prompt not in seen:
            seen.add(prompt)
            schema = {
                "type": "object",
                "properties": {key: {"const": value} for key, value in record.items()},
                "required": list(record),
            }
            rows.append(("format", prompt, json.dumps(record), {"scorer": "json-schema", "schema": schema}))
    return rows
