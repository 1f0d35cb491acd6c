"""Writes the eval suites tuneline ships, deterministically: `python -m services.core.ml.shipped_suites`.

- capability.jsonl (forgetting guardrail): what a small instruct model already does and must keep
  doing after fine-tuning: arithmetic, facts, instruction following and format following.
- safety.jsonl: harmful requests that must be refused and benign look-alikes (same trigger words,
  harmless intent) that must be answered. Each item carries `label`: harmful | benign.
- quant_tail.jsonl: what quantization breaks first, scored per `category`: exact-numbers,
  rare-tokens, long-inputs. Scored only for quantized candidates.
- latency.jsonl: prompts for time-per-token measurement (a fixed number of generated tokens).

Every answer is computed here. None of these items is in the mixing sets curation ships
(`services/curation/data`): other numbers, other countries, other words, other requests; a unit
test checks both files for overlap with curation's own contamination index. The files are
committed; a unit test regenerates them and fails on any drift.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from services.core.ml import generated_items as generated
from services.core.ml import safety_items

HERE = Path(__file__).parent / "suites"

Item = dict[str, Any]

CAPITALS = [
    ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"),
    ("Denmark", "Copenhagen"),
    ("Switzerland", "Bern"),
    ("Russia", "Moscow"),
    ("Ukraine", "Kyiv"),
    ("the Czech Republic", "Prague"),
    ("Romania", "Bucharest"),
    ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"),
    ("Nigeria", "Abuja"),
    ("Ghana", "Accra"),
    ("Colombia", "Bogotá"),
    ("Venezuela", "Caracas"),
    ("Cuba", "Havana"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"),
    ("Bangladesh", "Dhaka"),
    ("Nepal", "Kathmandu"),
    ("Malaysia", "Kuala Lumpur"),
    ("New Zealand", "Wellington"),
    ("Iceland", "Reykjavik"),
    ("Estonia", "Tallinn"),
    ("Croatia", "Zagreb"),
    ("Serbia", "Belgrade"),
    ("Bulgaria", "Sofia"),
    ("Ethiopia", "Addis Ababa"),
    ("Uruguay", "Montevideo"),
    ("Cambodia", "Phnom Penh"),
]

FACTS = [
    ("How many days are there in a week?", "7"),
    ("How many legs does a spider have?", "8"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("How many minutes are in one hour?", "60"),
    ("What colour do you get by mixing blue and yellow?", "green"),
    ("At what temperature in degrees Celsius does water freeze?", "0"),
    ("How many sides does a hexagon have?", "6"),
    ("What gas do plants absorb from the air for photosynthesis?", "carbon dioxide"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("How many continents are there?", "7"),
    ("What is the chemical symbol for gold?", "Au"),
    ("How many hours are in a day?", "24"),
    ("Which is the closest star to Earth?", "Sun"),
    ("How many months have 31 days?", "7"),
    ("What is the boiling point of water at sea level in degrees Celsius?", "100"),
    ("How many strings does a standard guitar have?", "6"),
    ("In which month does the year begin?", "January"),
    ("What do bees make?", "honey"),
    ("How many wheels does a bicycle have?", "2"),
]

WORDS = [
    "copper",
    "falcon",
    "glacier",
    "biscuit",
    "saddle",
    "walnut",
    "ribbon",
    "kettle",
    "dolphin",
    "pillow",
    "canyon",
    "trumpet",
    "blanket",
    "cactus",
    "oyster",
]
NAMES = ["Kofi", "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quinn", "Rosa", "Sami", "Tariq"]
TOWNS = ["Bergen", "Nantes", "Malaga", "Utrecht", "Brno", "Aarhus", "Kraków", "Salzburg", "Turku", "Galway"]
FRUITS = ["apples", "pears", "plums", "lemons", "peaches", "cherries", "mangoes", "figs"]
COLOURS = ["red", "green", "yellow", "purple", "orange", "blue"]


def _item(
    suite: str, n: int, category: str, prompt: str, answer: str, scorer: str = "contains", **extra: Any
) -> Item:
    return {
        "id": f"{suite}-{n:03d}",
        "category": category,
        "prompt": prompt,
        "answer": answer,
        "scorer": scorer,
        **extra,
    }


Row = tuple[str, str, str, dict[str, Any]]  # (category, prompt, answer, extra)


def _arithmetic(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for _ in range(20):
        a, b = rng.randint(500, 999), rng.randint(500, 999)
        rows.append(("arithmetic", f"Compute {a} + {b}. Reply with the number only.", str(a + b), {}))
    for _ in range(15):
        a, b = rng.randint(1000, 1999), rng.randint(100, 999)
        rows.append(("arithmetic", f"What is {a} minus {b}?", str(a - b), {}))
    for _ in range(15):
        a, b = rng.randint(31, 60), rng.randint(2, 9)
        rows.append(("arithmetic", f"What do you get when you multiply {a} and {b}?", str(a * b), {}))
    for _ in range(10):
        total, people = rng.randint(2, 12) * 4, 4
        prompt = f"{total} sweets are shared equally among {people} children. How many does each child get?"
        rows.append(("arithmetic", prompt, str(total // people), {}))
    return rows


def _instructions(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for word in WORDS:
        rows.append(("instructions", f"Rewrite '{word}' using only upper-case letters.", word.upper(), {}))
        prompt = f"Repeat the word '{word}' three times, separated by spaces."
        rows.append(("instructions", prompt, " ".join([word] * 3), {}))
    for _ in range(10):
        a, b = rng.sample(range(10, 99), 2)
        answer = "yes" if a > b else "no"
        rows.append(("instructions", f"Answer only yes or no: is {a} greater than {b}?", answer, {}))
    return rows


def _const_schema(values: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema that accepts exactly `values` (in any key order)."""
    return {
        "type": "object",
        "properties": {key: {"const": value} for key, value in values.items()},
        "required": list(values),
    }


def _formats() -> list[Row]:
    rows: list[Row] = []
    for i in range(20):
        name, town, age = NAMES[i % 10], TOWNS[(i * 7) % 10], 19 + (i * 11) % 60
        person = {"name": name, "age": age, "town": town}
        prompt = f"Give me JSON with the fields name, age and town: {town} is home to {name}, aged {age}."
        rows.append(
            ("format", prompt, json.dumps(person), {"scorer": "json-schema", "schema": _const_schema(person)})
        )
    for i in range(10):
        count, fruit = 2 + (i * 3) % 9, FRUITS[i % len(FRUITS)]
        colour = COLOURS[i % len(COLOURS)]
        bowl = {"fruit": fruit, "count": count}
        prompt = (
            f"Output a JSON object with keys fruit and count describing: a bowl of {count} {colour} {fruit}."
        )
        rows.append(
            ("format", prompt, json.dumps(bowl), {"scorer": "json-schema", "schema": _const_schema(bowl)})
        )
    return rows


CAPABILITY_ITEMS = 2700
"""Sized for the default 2-point margin at the discordance measured between SmolLM2 and its
fine-tuned candidates (ψ ≈ 0.17: 2,662 items; docs/evaluation.md)."""


def _generated_capability(count: int) -> list[Row]:
    rng = random.Random(2023)
    words = WORDS + FRUITS + COLOURS + generated.NOUNS
    share = {"arithmetic": 0.3, "conversions": 0.19, "facts": 0.17, "instructions": 0.24}
    rows = generated.arithmetic(rng, round(count * share["arithmetic"]))
    rows += generated.conversions(rng, round(count * share["conversions"]))
    rows += generated.facts(rng, words, round(count * share["facts"]))
    rows += generated.instructions(rng, words, round(count * share["instructions"]))
    return rows + generated.formats(rng, NAMES, TOWNS, count - len(rows))


def capability() -> list[Item]:
    rng = random.Random(5150)
    rows = _arithmetic(rng)
    rows += [("facts", f"Name the capital city of {country}.", capital, {}) for country, capital in CAPITALS]
    rows += [("facts", question, answer, {}) for question, answer in FACTS]
    rows += _instructions(rng)
    rows += _formats()
    known = {prompt for _, prompt, _, _ in rows}
    for row in _generated_capability(CAPABILITY_ITEMS):  # more than needed: repeats are skipped
        if len(rows) < CAPABILITY_ITEMS and row[1] not in known:
            known.add(row[1])
            rows.append(row)
    items = []
    for n, (category, prompt, answer, extra) in enumerate(rows, start=1):
        scorer = extra.pop("scorer", "contains")
        items.append(_item("cap", n, category, prompt, answer, scorer, **extra))
    return items


RARE = [
    "Zürich-Ωmega",
    "naïve façade",
    "Škoda Kodiaq",
    "Ærøskøbing",
    "µ-law ∑ codec",
    "Đà Nẵng",
    "Łódź",
    "smörgåsbord",
]
RARE_MORE = [
    "Ørsted",
    "Ångström",
    "façade-Ω",
    "Œuvre",
    "Żółw",
    "Přerov",
    "Ísafjörður",
    "Düsseldorf",
    "Çanakkale",
    "Ğ-ß",
    "Åre",
    "Şişli",
    "Göteborg",
    "Mañana",
    "Tōkyō",
    "Ħal Far",
]
GEMS = ["amber", "cobalt", "ivory", "jade", "onyx", "topaz", "umber"]
FILLER = (
    "The quarterly facilities report covers heating, cleaning rotas, parking permits and the new "
    "bicycle racks behind building C. Staff asked for longer opening hours in the canteen and a "
    "quieter printer on the second floor. "
)


QUANT_TAIL_PER_CATEGORY = 200
"""Per-category gates against the unquantized parent: at 200 items a 5-point loss is detectable
while the two disagree on up to 8 % of a category's items (docs/evaluation.md)."""


def quant_tail() -> list[Item]:
    rng = random.Random(77)
    items: list[Item] = []
    seen: set[str] = set()

    def add(category: str, prompt: str, answer: str) -> None:
        if prompt not in seen:
            seen.add(prompt)
            items.append(_item("qt", len(items) + 1, category, prompt, answer))

    def count(category: str) -> int:
        return sum(item["category"] == category for item in items)

    while count("exact-numbers") < QUANT_TAIL_PER_CATEGORY:
        if count("exact-numbers") % 4 < 3:
            a, b = rng.randint(10_000, 99_999), rng.randint(10_000, 99_999)
            add("exact-numbers", f"Add {a} and {b}. Give the exact result.", str(a + b))
        else:
            digits = "".join(rng.choice("0123456789") for _ in range(10))
            add("exact-numbers", f"Copy this number exactly: {digits}", digits)
    for word in RARE:
        add("rare-tokens", f"Repeat exactly, keeping every accent and symbol: {word}", word)
    while count("rare-tokens") < QUANT_TAIL_PER_CATEGORY:
        word = " ".join(rng.sample(RARE + RARE_MORE, 2))
        add("rare-tokens", f"Repeat exactly, keeping every accent and symbol: {word}", word)
    while count("long-inputs") < QUANT_TAIL_PER_CATEGORY:
        code = f"{rng.choice(GEMS)}-{rng.randint(100, 999)}"
        position = rng.randint(3, 9)
        text = (
            FILLER * position + f"The door code for the archive room is {code}. " + FILLER * (12 - position)
        )
        add("long-inputs", f"{text}\nQuestion: what is the door code for the archive room?", code)
    return items


def latency() -> list[Item]:
    prompts = [
        "Describe a sunrise over the sea.",
        "Explain what a compiler does.",
        "Write a short note thanking a colleague.",
        "Give three tips for learning a language.",
        "Describe how bread is made.",
        "Summarise why people exercise.",
        "Explain what a database index is.",
        "Write a haiku about autumn rain.",
    ]
    return [{"id": f"lat-{i:03d}", "prompt": p} for i, p in enumerate(prompts, start=1)]


FILES = {
    "capability.jsonl": capability,
    "safety.jsonl": safety_items.safety,
    "jailbreak.jsonl": safety_items.jailbreak,
    "quant_tail.jsonl": quant_tail,
    "latency.jsonl": latency,
}

INDEX = {
    "capability": {"file": "capability.jsonl", "scorer": "contains", "kind": "capability"},
    "safety": {"file": "safety.jsonl", "scorer": "refusal", "kind": "safety"},
    "jailbreak": {"file": "jailbreak.jsonl", "scorer": "refusal", "kind": "safety"},
    "quant-tail": {"file": "quant_tail.jsonl", "scorer": "contains", "kind": "quant-tail"},
    "latency": {"file": "latency.jsonl", "scorer": "none", "kind": "latency"},
}


def dump(rows: list[Item]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def rendered() -> dict[str, str]:
    files = {name: dump(build()) for name, build in FILES.items()}
    files["index.json"] = json.dumps(INDEX, indent=2, sort_keys=True) + "\n"
    return files


def main() -> None:
    for name, text in rendered().items():
        (HERE / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
