"""What an evaluation is asked to do (`EvalOptions`), what it returns (`Outcome`), and how it refuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.evaluation import GateResult, SuiteResult
from services.evaluation.engine import BATCH_SIZE


class EvaluationError(Exception):
    """The candidate cannot be evaluated; `reason` is a short code, the message says what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class EvalOptions:
    device: str = "cpu"
    suites: tuple[str, ...] = ()
    batch_size: int = BATCH_SIZE
    max_new_tokens: int = 128
    latency_tokens: int = 16
    latency_items: int = 8
    latency_rounds: int = 3
    dtype: str = "auto"
    bootstrap_samples: int = 2000
    cache: bool = True


@dataclass
class Outcome:
    suites: list[SuiteResult]
    gates: list[GateResult]
    notes: list[str]
    report: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)
