"""How a gate reads in the card, the CLI and the demo's summary: its reference, the bound it decided
on, its margin, n, MDE, test and verdict, underpowered said out loud."""

from __future__ import annotations

from schemas.evaluation import GateResult, HypothesisTest
from services.core.reports import GATE_COLUMNS, gate_cells
from services.demo_registry import gate_power
from services.registry.cards import gate_table

TEST = HypothesisTest(
    hypothesis="non-inferiority",
    method="Tango score test, paired proportions",
    n=400,
    alpha=0.05,
    margin=2.0,
    estimate=0.5,
    bound=-3.1,
    p_value=0.12,
    mde=5.1,
    underpowered=True,
    rejected=False,
)


def gate(**fields: object) -> dict[str, object]:
    values: dict[str, object] = {
        "gate": "capability:capability",
        "value": 3.1,
        "threshold": 2.0,
        "comparator": "<=",
        "statistic": TEST.method,
        "p_value": 0.12,
        "reference": "base",
        "test": TEST,
        "underpowered": True,
        "passed": False,
        **fields,
    }
    return GateResult.model_validate(values).model_dump(mode="json")


def test_a_tested_gate_shows_its_bound_margin_items_mde_and_why_it_failed() -> None:
    cells = dict(zip(GATE_COLUMNS, gate_cells(gate()), strict=True))
    assert cells == {
        "gate": "capability:capability",
        "vs": "base",
        "decides on": "loss ≤ 3.10",
        "margin": "<= 2",
        "n": "400",
        "MDE": "5.1",
        "test": "Tango score test, paired proportions",
        "p": "0.12",
        "verdict": "FAIL (underpowered)",
    }
    accepted = dict(zip(GATE_COLUMNS, gate_cells(gate(passed=True)), strict=True))
    assert accepted["verdict"] == "pass (underpowered, accepted)"
    count = gate(
        gate="memorization", value=0.0, threshold=0.0, statistic=None, p_value=None, reference=None,
        test=None, underpowered=False, passed=True,
    )  # fmt: skip
    assert gate_cells(count) == ("memorization", "—", "0", "<= 0", "—", "—", "count", "—", "pass")
    assert "**FAIL (underpowered)**" in gate_table([gate()])[2]


def test_the_demo_summary_states_each_tested_gates_power() -> None:
    detail = {"decisions": [{"gates": [gate(), gate(gate="memorization", test=None, underpowered=False)]}]}
    assert gate_power(detail) == [
        "capability:capability: 400 items, margin 2, MDE 5.1 points, FAILED (underpowered)"
    ]
