"""Statistics as table text, shared by the adaptation card, the CLI and the demo: one spelling of
a p-value, an interval and a gate everywhere a person reads them."""

from __future__ import annotations

from typing import Any


def p_text(stats: dict[str, Any]) -> str:
    """A comparison's or gate's p-value as table text."""
    return "—" if stats.get("p_value") is None else f"{stats['p_value']:.3g}"


def ci_text(stats: dict[str, Any]) -> str:
    """A comparison's or gate's bootstrap interval as table text."""
    return "—" if stats.get("ci_low") is None else f"[{stats['ci_low']:+.1f}, {stats['ci_high']:+.1f}]"


GATE_COLUMNS = ("gate", "vs", "decides on", "margin", "n", "MDE", "test", "p", "verdict")


def gate_cells(gate: dict[str, Any]) -> tuple[str, ...]:
    """One gate as table cells: what it compared, the bound it decided on against its margin, the
    items and the smallest effect they can see, the test, and the verdict (underpowered said)."""
    test = gate.get("test") or {}
    bound = {"non-inferiority": "loss ≤", "superiority": "gain ≥"}.get(test.get("hypothesis", ""))
    decides = f"{bound} {gate['value']:.2f}" if bound else f"{gate['value']:.3g}"
    margin = f"{gate['comparator']} {gate['threshold']:g}"
    verdict = "pass" if gate["passed"] else "FAIL"
    if gate.get("underpowered"):
        verdict += " (underpowered, accepted)" if gate["passed"] else " (underpowered)"
    return (
        gate["gate"],
        gate.get("reference") or "—",
        decides,
        margin,
        str(test["n"]) if test else "—",
        f"{test['mde']:.1f}" if test else "—",
        test.get("method")
        or gate.get("statistic")
        or ("ratio" if gate["gate"].startswith("latency") else "count"),
        p_text(gate),
        verdict,
    )
