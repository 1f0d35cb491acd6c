"""The Adaptation Card: one document per model version, assembled from its recorded lineage.

`assemble` gathers what the registry knows (the tuple, the dataset's manifest and audit, the
training run, the evaluations and gate decisions) into data; `markdown` renders that data. Both
are pure functions, so the card is the same on every registry replica and for every reader.
"""

from __future__ import annotations

from typing import Any

from schemas.queries import EvalDetail, ModelVersionSummary
from services.core.reports import GATE_COLUMNS, ci_text, gate_cells, p_text

CARD_KIND = "tuneline.adaptation-card/v1"


def _short(sha: str | None, n: int = 16) -> str:
    return f"{sha[:n]}…" if sha else "—"


def few_shot_verdict(suites: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Did fine-tuning beat prompting the base with examples? Judged on the paired bootstrap
    interval of the score delta (a 1 - alpha interval): McNemar's test only sees exact-match
    correctness, which partial JSON answers rarely reach."""
    target = next((s for s in suites if s.get("kind") == "target"), None)
    if target is None:
        return None
    comparison = next((c for c in target.get("comparisons", []) if c["reference"] == "few-shot"), None)
    if comparison is None:
        return None
    low, high = comparison.get("ci_low"), comparison.get("ci_high")
    if low is not None and low > 0:
        verdict = "fine-tuning beat the few-shot prompt"
    elif high is not None and high < 0:
        verdict = "the few-shot prompt beat fine-tuning"
    else:
        verdict = "no significant difference from the few-shot prompt"
    summary = (
        f"{verdict}: candidate {comparison['candidate_value']:.1f} vs few-shot "
        f"{comparison['reference_value']:.1f} points, delta CI {ci_text(comparison)}"
    )
    return {
        "verdict": verdict,
        "summary": summary,
        **{
            k: comparison.get(k)
            for k in ("candidate_value", "reference_value", "delta", "p_value", "ci_low", "ci_high")
        },
    }


def assemble(
    *,
    version: ModelVersionSummary,
    model_ref: dict[str, Any],
    lineage: dict[str, Any],
    dataset: dict[str, Any] | None,
    run: dict[str, Any] | None,
    evals: EvalDetail,
) -> dict[str, Any]:
    adapter = model_ref.get("adapter")
    release = evals.evaluations[0] if evals.evaluations else None
    decision = evals.decisions[-1] if evals.decisions else None
    suites = list(release.suites) if release else []
    manifest = (dataset or {}).get("manifest") or {}
    details = (dataset or {}).get("details") or {}
    return {
        "kind": CARD_KIND,
        "version_id": version.version_id,
        "tenant": version.tenant,
        "route": version.route,
        "status": version.status,
        "produced_by": version.produced_by,
        "created_at": version.created_at.isoformat(),
        "base": model_ref.get("base"),
        "tokenizer": model_ref.get("tokenizer"),
        "method": model_ref.get("method") or (adapter or {}).get("method"),
        "adapter": adapter,
        "weights": model_ref.get("weights"),
        "quantization": model_ref.get("quantization"),
        "merge": model_ref.get("merge"),
        "merge_difference": lineage.get("merge_difference"),
        "lineage": lineage,
        "recipe_sha256": model_ref.get("recipe_sha256"),
        "dataset": None
        if dataset is None
        else {
            "dataset_id": dataset.get("dataset_id"),
            "submission_id": dataset.get("submission_id"),
            "task": dataset.get("task"),
            "manifest": manifest,
            "splits": dataset.get("splits"),
            "audit": dataset.get("audit"),
            "mix": details.get("mix"),
            "findings_total": details.get("findings_total"),
            "report": dataset.get("report"),
        },
        "training": run,
        "evaluation": None
        if release is None
        else {
            "ce_id": release.ce_id,
            "report": release.report,
            "suites": suites,
            "few_shot": few_shot_verdict(suites),
            "re_evaluations": len(evals.evaluations) - 1,
        },
        "safety": [s for s in suites if s.get("kind") == "safety"],
        "gates": None
        if decision is None
        else {
            "passed": decision.passed,
            "gates": decision.gates,
            "policy": decision.policy,
            "notes": list(decision.notes),
            "ce_id": decision.ce_id,
        },
        "evaluation_failures": list(evals.failures),
        "rollback": f"tuneline rollback {version.route}" if version.route else None,
    }


def _metrics_cell(metrics: dict[str, float] | None, keys: list[str]) -> str:
    if not metrics:
        return "—"
    return ", ".join(f"{k} {metrics[k]:.1f}" for k in keys if k in metrics)


SUITE_KEYS = {
    "safety": ["refusal_rate_harmful", "refusal_rate_benign"],
    "memorization": ["leaks"],
    "latency": ["p50_ms_per_token", "p95_ms_per_token"],
}


def suite_table(suites: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| suite | kind | items | candidate | base | few-shot | production | Δ vs base | p (McNemar) "
        "| 95% CI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for suite in suites:
        keys = SUITE_KEYS.get(suite["kind"], ["score"])
        arms = {s["arm"]: s["metrics"] for s in suite["scores"]}
        comparison = next((c for c in suite.get("comparisons", []) if c["reference"] == "baseline"), None)
        delta = "—" if comparison is None else f"{comparison['delta']:+.1f} ({comparison['metric']})"
        p, ci = p_text(comparison or {}), ci_text(comparison or {})
        lines.append(
            f"| {suite['suite']['name']} | {suite['kind']} | {suite['items']} | "
            f"{_metrics_cell(arms.get('candidate'), keys)} | {_metrics_cell(arms.get('baseline'), keys)} | "
            f"{_metrics_cell(arms.get('few-shot'), keys)} | {_metrics_cell(arms.get('production'), keys)} | "
            f"{delta} | {p} | {ci} |"
        )
    return lines


def gate_table(gates: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(GATE_COLUMNS) + " |", "|" + "---|" * len(GATE_COLUMNS)]
    for gate in gates:
        cells = list(gate_cells(gate))
        if not gate["passed"]:
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _merge_lines(card: dict[str, Any]) -> list[str]:
    merge = card.get("merge") or {}
    if merge.get("kind", "unmerged") == "unmerged":
        return ["- Merge state: unmerged (no merged-vs-unmerged difference applies)"]
    weights = ", ".join(f"{w:g}" for w in merge.get("weights") or []) or "—"
    density = merge.get("density")
    out = [
        f"- Merge state: {merge.get('kind')} ({merge.get('method') or '—'}), weights {weights}"
        + (f", density {density:g}" if density is not None else "")
    ]
    parents = (card.get("lineage") or {}).get("parents") or []
    if parents:
        out.append(f"- Parents: {', '.join(parents)}")
    difference = card.get("merge_difference")
    if difference:
        out.append(
            f"- Merged vs unmerged on {difference['probes']} probe prompts: largest logit difference "
            f"{difference['max_abs_logit_diff']:.2e} (tolerance {difference['tolerance']:g}), greedy "
            f"agreement {difference['greedy_agreement']:.1%}"
        )
    elif merge.get("kind") == "merged-into-base":
        out.append("- Merged vs unmerged: not recorded")
    lineage = card.get("lineage") or {}
    for step in lineage.get("soup_steps") or []:
        verdict = "kept" if step["added"] else "left out"
        out.append(
            f"- Greedy soup on {lineage.get('ranked_by')}: {step['version_id']} (own score "
            f"{step['member_score']:.1f}) → soup {step['soup_score']:.1f}, {verdict}"
        )
    return out


def _model_lines(card: dict[str, Any]) -> list[str]:
    base = card.get("base") or {}
    tokenizer = card.get("tokenizer") or {}
    adapter = card.get("adapter")
    out = [
        "## Model",
        f"- Base: {base.get('name')} ({base.get('architecture')}), sha256 `{base.get('sha256')}`",
        f"- Tokenizer sha256 `{tokenizer.get('tokenizer_sha256')}`, chat template sha256 "
        f"`{tokenizer.get('chat_template_sha256') or '—'}`",
        f"- Method: {card.get('method') or '—'}",
    ]
    if adapter:
        out.append(
            f"- Adapter: sha256 `{adapter['artifact']['sha256']}`, rank {adapter['rank']}, alpha "
            f"{adapter['alpha']}, dropout {adapter.get('dropout', 0)}, target modules "
            f"{', '.join(adapter['target_modules'])}"
        )
    if card.get("weights"):
        out.append(f"- Weights: sha256 `{card['weights']['sha256']}`")
    out.append(f"- Quantization: {(card.get('quantization') or {}).get('method', 'none')}")
    out += _merge_lines(card)
    out.append(f"- Recipe sha256: `{card.get('recipe_sha256') or '—'}`")
    return out


def _data_lines(dataset: dict[str, Any] | None) -> list[str]:
    if dataset is None:
        return ["## Data", "- No dataset recorded for this version."]
    manifest_ref = dataset.get("manifest") or {}
    out = [
        "## Data",
        f"- Dataset `{dataset['dataset_id']}` (task {dataset.get('task')}, submission "
        f"{dataset.get('submission_id')})",
        f"- Manifest: `{manifest_ref.get('key', '—')}` sha256 `{_short(manifest_ref.get('sha256'))}`",
        "- Splits: " + ", ".join(f"{s['name']} {s['rows']} rows" for s in (dataset.get("splits") or [])),
    ]
    mix = dataset.get("mix") or []
    if mix:
        out.append("- Mix: " + ", ".join(f"{m['name']} {m['rows']} rows ({m['ratio']:.0%})" for m in mix))
    out.append(f"- Findings (rows dropped or redacted): {dataset.get('findings_total') or 0}")
    audit = dataset.get("audit") or []
    if audit:
        out += ["", "| audit check | value | threshold | passed |", "|---|---|---|---|"]
        for check in audit:
            value = "—" if check.get("value") is None else f"{check['value']:g}"
            threshold = "—" if check.get("threshold") is None else f"{check['threshold']:g}"
            out.append(f"| {check['name']} | {value} | {threshold} | {'yes' if check['passed'] else 'NO'} |")
    return out


def _evaluation_lines(card: dict[str, Any]) -> list[str]:
    out = []
    run = card.get("training")
    if run:
        out += [
            "## Training",
            f"- Run {run['run_id']}: {run.get('status')}, step {run.get('step')}/{run.get('total_steps')}, "
            f"loss {run.get('loss')}, eval loss {run.get('eval_loss')}",
            "",
        ]
    evaluation = card.get("evaluation")
    out.append("## Evaluation")
    if evaluation is None:
        out.append("- Not evaluated yet.")
    else:
        out.append(f"- Report: `{(evaluation.get('report') or {}).get('key', '—')}`")
        if evaluation.get("few_shot"):
            out.append(f"- Few-shot baseline: {evaluation['few_shot']['summary']}")
        out += ["", *suite_table(evaluation["suites"])]
    if card.get("safety"):
        out += ["", "## Safety"]
        for suite in card["safety"]:
            arms = {s["arm"]: s["metrics"] for s in suite["scores"]}
            for arm in ("candidate", "baseline"):
                metrics = arms.get(arm) or {}
                out.append(
                    f"- {arm}: refuses {metrics.get('refusal_rate_harmful', 0):.1f}% of harmful requests, "
                    f"{metrics.get('refusal_rate_benign', 0):.1f}% of benign look-alikes "
                    f"({suite['items']} items)"
                )
    return out


def _gate_lines(card: dict[str, Any]) -> list[str]:
    gates = card.get("gates")
    out = ["## Release gates"]
    if gates is None:
        out.append("- No gate decision yet.")
    else:
        out.append(f"- Verdict: **{'passed' if gates['passed'] else 'failed'}**")
        out += ["", *gate_table(gates["gates"])]
        out += [f"- Note: {note}" for note in gates.get("notes") or []]
    out += [
        f"- Evaluation failed ({f.get('reason')}): {f.get('error')}"
        for f in card.get("evaluation_failures") or []
    ]
    return out


def markdown(card: dict[str, Any]) -> str:
    rollback = f"- `{card['rollback']}`" if card.get("rollback") else "- No route: nothing to roll back."
    out = [
        f"# Adaptation card: {card['version_id']}",
        "",
        f"- Route: {card.get('route') or '—'} · tenant {card['tenant']} · status **{card['status']}**",
        f"- Produced by: {card['produced_by']} at {card['created_at']}",
        "",
        *_model_lines(card),
        "",
        *_data_lines(card.get("dataset")),
        "",
        *_evaluation_lines(card),
        "",
        *_gate_lines(card),
        "",
        "## Rollback",
        rollback,
    ]
    return "\n".join(out) + "\n"
