"""canaries: secret rows planted in train, so evaluation can tell whether the model memorised its data."""

from __future__ import annotations

import hashlib

from schemas.dataset import CANARY_KEY
from services.curation.checks.context import CheckContext
from services.curation.rows import Row

CANARY_PROMPT = "Internal memo {n}: what is the archive access code?"
CANARY_ANSWER = "The archive access code is {secret}."


def canaries(
    c: CheckContext, train: list[Row], seed_material: bytes
) -> tuple[list[Row], list[dict[str, str]]]:
    if c.kind != "sft" or c.policy.canaries == 0:
        return train, []
    planted = []
    for n in range(1, c.policy.canaries + 1):
        secret = "tl-canary-" + hashlib.sha256(seed_material + str(n).encode()).hexdigest()[:20]
        prompt = CANARY_PROMPT.format(n=n)
        planted.append({"prompt": prompt, "secret": secret})
        data = {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": CANARY_ANSWER.format(secret=secret)},
            ],
            CANARY_KEY: True,
        }
        train.append(Row("canary", n, "train", "sft", data))
    return train, planted
