"""Checkpoint choice by guardrails: the screen's test and its error rates, the samples it reads
(never the gates'), which checkpoints a run offers, and the rule that picks one."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from schemas.checkpoints import CheckpointSelection, ScreenedCheckpoint
from schemas.evaluation import HypothesisTest
from schemas.recipe import TrainingRecipe
from schemas.refs import ArtifactRef
from services.core.artifacts import ArtifactStore
from services.core.ml.suite_catalogue import all_suites
from services.evaluation.decisions import mde
from services.evaluation.options import EvaluationError
from services.evaluation.screening import harm_test, screen_plans
from services.evaluation.suite_plan import catalogue_plan, sampled, without
from services.training.job import Done
from services.training.selection import choose, offered, table


def _test(rejected: bool) -> HypothesisTest:
    return HypothesisTest(
        hypothesis="superiority", method="m", n=100, alpha=0.05, margin=5, estimate=0, bound=0,
        p_value=0.01 if rejected else 0.5, mde=8, underpowered=False, rejected=rejected,
    )  # fmt: skip


def _row(step: int, loss: float | None, passed: bool) -> ScreenedCheckpoint:
    return ScreenedCheckpoint(
        step=step, version_id=f"mv-{step}", eval_loss=loss, capability=_test(not passed), passed=passed
    )


def test_the_choice_is_the_lowest_validation_loss_among_the_checkpoints_that_passed() -> None:
    rows = [_row(10, 2.0, True), _row(20, 1.5, True), _row(30, 1.0, False), _row(40, 0.9, False)]
    chosen = choose(rows)
    assert chosen is not None and chosen.step == 20, "the lower losses belong to checkpoints that failed"
    assert choose([_row(10, None, True), _row(20, None, True), _row(30, None, False)]).step == 20  # type: ignore[union-attr]
    assert choose([_row(10, 1.0, False)]) is None
    # ties on loss go to the earlier checkpoint
    assert choose([_row(10, 1.0, True), _row(20, 1.0, True)]).step == 10  # type: ignore[union-attr]
    assert "step 30, eval_loss 1.0000" in table(rows) and table(rows).count("FAILED") == 2


def _outcomes(
    n: int, base_rate: float, loss: float, discordance: float, rng: random.Random
) -> tuple[list[float], list[float]]:
    """Paired outcomes where the checkpoint loses `loss` (a share) with this much discordance."""
    lost, gained = (discordance + loss) / 2, (discordance - loss) / 2
    base, checkpoint = [], []
    for _ in range(n):
        u = rng.random()
        if u < lost:
            pair = (1.0, 0.0)
        elif u < lost + gained:
            pair = (0.0, 1.0)
        else:
            right = rng.random() < base_rate
            pair = (float(right), float(right))
        base.append(pair[0])
        checkpoint.append(pair[1])
    return base, checkpoint


def test_the_screen_drops_a_checkpoint_that_loses_nothing_at_most_alpha_of_the_time() -> None:
    rng = random.Random(7)
    n, margin, alpha, discordance = 100, 5.0, 0.05, 0.12
    runs = 400
    dropped_a_a = sum(
        harm_test(*_outcomes(n, 0.6, 0.0, discordance, rng), margin, alpha).rejected for _ in range(runs)
    )
    assert dropped_a_a / runs <= alpha, "an A/A checkpoint is dropped at most alpha of the time"
    # at the margin itself the test is at its level too
    at_margin = sum(
        harm_test(*_outcomes(n, 0.6, margin / 100, discordance, rng), margin, alpha).rejected
        for _ in range(runs)
    )
    assert at_margin / runs <= alpha + 0.03
    # a loss of margin + MDE is dropped about 80 % of the time; the MDE at the variance such a
    # checkpoint shows (the noise's discordance plus the loss, less the loss squared)
    loss = margin / 100
    for _ in range(50):
        loss = (margin + mde(discordance + loss - loss**2, n, alpha)) / 100
    big = sum(
        harm_test(*_outcomes(n, 0.6, loss, discordance + loss, rng), margin, alpha).rejected
        for _ in range(runs)
    )
    assert big / runs >= 0.72, f"a {100 * loss:.1f}-point loss was dropped {big}/{runs} times"


def test_a_screen_states_its_test() -> None:
    base = [1.0] * 50 + [0.0] * 50
    checkpoint = [0.0] * 30 + [1.0] * 20 + [0.0] * 50
    test = harm_test(base, checkpoint, 5.0, 0.05)
    assert test.hypothesis == "superiority" and test.n == 100 and test.estimate == pytest.approx(30.0)
    assert test.rejected and test.p_value < 0.05 and test.mde > 0 and test.margin == 5.0
    assert not harm_test(base, base, 5.0, 0.05).rejected


@pytest.fixture
def catalogue(tmp_path: Path) -> Any:
    store = ArtifactStore(str(tmp_path / "store"))
    return SimpleNamespace(_all_suites=lambda: all_suites(store))


def test_the_screen_samples_are_its_own_and_the_gates_leave_them_out(catalogue: Any) -> None:
    plans = screen_plans(catalogue, CheckpointSelection())
    capability, safety = plans["capability"], plans["safety"]
    assert len(capability.items) == 100 and len(safety.items) == 40
    assert {item["label"] for item in safety.items} == {"harmful"}
    full = catalogue_plan(next(s for s in catalogue._all_suites() if s.name == "capability"))
    screened = {str(i["id"]) for i in capability.items}
    # not the gates' own sample of the same size
    assert screened != {str(i["id"]) for i in sampled(full, 100).items}
    gated = without(full, screened)
    assert len(gated.items) == len(full.items) - 100
    assert not screened & {str(i["id"]) for i in gated.items}
    assert gated.ref.sha256 != full.ref.sha256, "the gates' suite without them is a suite of its own"
    # the same request screens the same items (a resumed run, a second run on the same recipe)
    assert [i["id"] for i in screen_plans(catalogue, CheckpointSelection())["capability"].items] == [
        i["id"] for i in capability.items
    ]


def test_a_screen_that_would_leave_the_gates_too_little_is_refused(catalogue: Any) -> None:
    with pytest.raises(EvaluationError, match="at most half") as raised:
        screen_plans(catalogue, CheckpointSelection(safety_items=200))
    assert raised.value.reason == "screen-too-large"
    with pytest.raises(EvaluationError, match="catalogue") as unknown:
        screen_plans(catalogue, CheckpointSelection(capability_suite="trivia"))
    assert unknown.value.reason == "suite-unknown"


def _ref(n: int) -> ArtifactRef:
    return ArtifactRef(key=f"sha256/{n:064x}", sha256=f"{n:064x}", size_bytes=1)


def _done(steps: int, *, best_at_end: bool = False, final_eval_loss: float | None = None) -> Done:
    return Done(
        model_dir="/x/final",
        steps=steps,
        runtime_s=1.0,
        best_at_end=best_at_end,
        final_eval_loss=final_eval_loss,
    )


def test_a_run_offers_its_checkpoints_and_its_final_model_once() -> None:
    history = [
        {"step": s, "tree": _ref(s).model_dump(mode="json"), "eval_loss": 3.0 - s / 10} for s in (5, 10, 15)
    ]
    released: list[int] = []

    def release(tree: ArtifactRef) -> ArtifactRef:
        released.append(int(tree.sha256, 16))
        return _ref(1000 + int(tree.sha256, 16))

    # the last checkpoint is at the final step: the final model stands for it, with its loss
    offers = offered(history, _done(15), _ref(99), release)
    assert [(o.step, o.tree.sha256, o.eval_loss) for o in offers] == [
        (5, _ref(1005).sha256, 2.5),
        (10, _ref(1010).sha256, 2.0),
        (15, _ref(99).sha256, pytest.approx(1.5)),
    ]
    assert released == [5, 10]
    # a final step past the last checkpoint is offered too
    assert [o.step for o in offered(history, _done(17, final_eval_loss=1.2), _ref(99), release)] == [
        5,
        10,
        15,
        17,
    ]
    # early stopping restored the best checkpoint at the end: only the checkpoints are offered
    assert [o.step for o in offered(history, _done(17, best_at_end=True), _ref(99), release)] == [5, 10, 15]


def test_a_recipe_opts_in_and_checkpoints_then_follow_every_evaluation() -> None:
    from services.training.job import TrainingJob
    from services.training.methods.loading import common_arguments

    recipe = TrainingRecipe.model_validate(
        {"base_model": "tiny-llama", "eval_steps": 5, "checkpoint_steps": 50, "checkpoint_selection": {}}
    )
    assert recipe.checkpoint_selection == CheckpointSelection()
    job = TrainingJob(
        run_id="r", recipe=recipe, data_format="sft", base_dir="/b", train_file="/t", output_dir="/o",
        artifact_root="/a", checkpoint_ref_key="k", device="cpu",
    )  # fmt: skip
    assert common_arguments(job, has_eval=True)["save_steps"] == 5
    assert common_arguments(job, has_eval=False)["save_steps"] == 50
    plain = cast(Any, job).model_copy(
        update={"recipe": recipe.model_copy(update={"checkpoint_selection": None})}
    )
    assert common_arguments(plain, has_eval=True)["save_steps"] == 50
