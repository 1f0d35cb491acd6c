"""Writes the demo task: turn a customer support ticket into a JSON record.

`python examples/support-tickets/generate.py` rewrites tickets.jsonl deterministically. SmolLM2-135M
cannot do this reliably by prompting: it must pick the customer, order number, product, category
and priority out of free text and answer with exactly one JSON object.

A few rows are bad on purpose, so the audit has something to show on a real run: 3 exact
duplicates, 2 near-duplicates, 2 phone numbers and 1 e-mail address (redacted), 2 completions with
teacher boilerplate (dropped by the demo recipe) and 1 empty completion (dropped).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kira",
    "Luca",
    "Maya",
    "Nils",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Yusuf",
]
LAST = [
    "Alvarez",
    "Becker",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hoffmann",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Laurent",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Rossi",
    "Silva",
    "Tanaka",
    "Weber",
]
PRODUCTS = [
    "Aurora desk lamp",
    "Nimbus office chair",
    "Orbit wireless mouse",
    "Cascade water filter",
    "Summit hiking backpack",
    "Pulse fitness tracker",
    "Harbor coffee grinder",
    "Atlas standing desk",
    "Echo bluetooth speaker",
    "Zephyr air purifier",
    "Vertex mechanical keyboard",
    "Lumen smart bulb",
]
ISSUES = {
    "shipping": [
        "my order {order} with the {product} still has not arrived after two weeks",
        "the tracking page for order {order} ({product}) has not changed in six days",
        "order {order} was delivered to the wrong address, the {product} is not here",
    ],
    "returns": [
        "I want to return the {product} from order {order} because it is too small",
        "the {product} in order {order} arrived damaged and I would like a replacement",
        "how do I send back the {product} I bought in order {order}",
    ],
    "billing": [
        "I was charged twice for order {order} (the {product})",
        "the invoice for order {order} shows the wrong price for the {product}",
        "my discount code was not applied to order {order} for the {product}",
    ],
    "technical": [
        "the {product} from order {order} stops working after ten minutes",
        "I cannot pair the {product} (order {order}) with my phone",
        "the {product} I got in order {order} makes a loud noise when it starts",
    ],
    "account": [
        "I cannot log in to see order {order} for the {product}",
        "please change the email on my account, I ordered the {product} as order {order}",
        "my account shows order {order} for a {product} that I never placed",
    ],
}
PRIORITY_CUES = {
    "urgent": ["This is urgent, I need it fixed today.", "Please help immediately, it is urgent."],
    "high": ["Please handle this as soon as possible.", "I need an answer quickly."],
    "normal": ["Thanks for your help.", "Looking forward to your reply."],
    "low": ["No rush, whenever you get a chance.", "It is not urgent at all."],
}
OPENINGS = ["Hi,", "Hello support team,", "Good morning,", "Dear customer service,", "Hey there,", "Hi team,"]
INSTRUCTION = (
    "Extract the support ticket below as one JSON object with the keys customer, order_id, product, "
    "category (shipping, returns, billing, technical or account) and priority (low, normal, high or urgent)."
)


def ticket(rng: random.Random) -> tuple[str, dict[str, object]]:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    product = rng.choice(PRODUCTS)
    order = rng.randint(10000, 99999)
    category = rng.choice(sorted(ISSUES))
    priority = rng.choice(sorted(PRIORITY_CUES))
    issue = rng.choice(ISSUES[category]).format(order=order, product=product)
    text = (
        f"{rng.choice(OPENINGS)} {issue[0].upper()}{issue[1:]}. {rng.choice(PRIORITY_CUES[priority])} {name}"
    )
    record = {
        "customer": name,
        "order_id": order,
        "product": product,
        "category": category,
        "priority": priority,
    }
    return text, record


def row(text: str, record: dict[str, object] | str) -> dict[str, str]:
    completion = record if isinstance(record, str) else json.dumps(record)
    return {"prompt": f"{INSTRUCTION}\n\nTicket: {text}", "completion": completion}


def build() -> list[dict[str, str]]:
    rng = random.Random(7)
    rows = [row(*ticket(rng)) for _ in range(300)]
    rows += [dict(rows[i]) for i in (3, 40, 77)]  # exact duplicates
    near = [rows[i] for i in (12, 150)]
    rows += [
        {
            "prompt": r["prompt"] + " Thank you.",
            "completion": r["completion"],
        }
        for r in near
    ]  # near-duplicates: two words added
    for i, contact in (
        (20, "Call me on +44 20 7946 0958."),
        (21, "My number is 555-201-7733."),
        (22, "Reply to tara.weber@example.org please."),
    ):
        rows[i] = {"prompt": rows[i]["prompt"] + " " + contact, "completion": rows[i]["completion"]}
    for i in (30, 31):
        rows[i] = {
            "prompt": rows[i]["prompt"],
            "completion": "Certainly! Here is the JSON: " + rows[i]["completion"],
        }
    rows[33] = {"prompt": rows[33]["prompt"], "completion": "   "}
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("tickets.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in build()), encoding="utf-8")
    print(f"wrote {out}")
