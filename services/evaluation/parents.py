"""Which parents a candidate is judged against, and on what.

- A **quantized version** whose one parent is unquantized (merging's quantize methods) is judged
  against that parent on every suite: the parent is the reference its gates read (quant tail and
  capability per category), since the question is what quantization cost, not what the adapter
  gained over the base.
- An **adapter combination or soup** is scored on every parent's own target suite (that parent's
  test split), against that parent: it must not lose more than `parent_task_max_drop` on any of
  the tasks it combines. Its capability and safety suites are judged against the base as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.refs import ModelRef

COMBINED = ("adapter-combination", "soup")


def arm_name(index: int) -> str:
    """The engine arm of parent `index` (its ArmOutcome's arm is "parent")."""
    return f"parent-{index}"


@dataclass(frozen=True)
class Roles:
    quantized_from: int | None = None  # the parent every suite compares with
    tasks_of: tuple[int, ...] = field(default=())  # parents whose target suites are evaluated

    @property
    def arms(self) -> tuple[int, ...]:
        return (self.quantized_from,) if self.quantized_from is not None else self.tasks_of


def roles(candidate: ModelRef, parents: list[ModelRef]) -> Roles:
    if (
        candidate.quantization.method != "none"
        and len(parents) == 1
        and parents[0].quantization.method == "none"
    ):
        return Roles(quantized_from=0)
    if candidate.merge.kind in COMBINED:
        return Roles(tasks_of=tuple(i for i, p in enumerate(parents) if p.dataset is not None))
    return Roles()
