"""Writes data.jsonl, the documents of the example lm-evaluation-harness task `tl_arith`.

`tuneline suites add arith examples/lm-eval-task --scorer lm-eval:tl_arith --kind capability`
registers it; evaluation then scores every candidate and its base on it with lm-eval's
log-likelihood multiple choice. Run `python examples/lm-eval-task/generate.py` to rewrite it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def rows() -> list[dict[str, object]]:
    rng = random.Random(11)
    out = []
    for _ in range(24):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        choices = [str(a + b), str(a + b + rng.randint(1, 9)), str(a * b)]
        order = rng.sample(range(3), 3)
        out.append(
            {
                "question": f"What is {a} plus {b}?",
                "choices": [choices[i] for i in order],
                "answer": order.index(0),
            }
        )
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("data.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
