"""Each training method trains the tiny model on CPU: its loss falls and its weights change."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from schemas.dataset import CANARY_KEY, SELF_REPLAY_KEY
from services.core.ml.models import PICKLE_SUFFIXES
from services.training.job import Progress, TrainingJob, WorkerMessage
from services.training.worker import run
from tests.support.training import job_for, recipe


class Collect:
    """A worker reporter that keeps the messages; `stop_after` sets the stop event at that step."""

    def __init__(self, stop: threading.Event | None = None, stop_after: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.stop = stop
        self.stop_after = stop_after

    def __call__(self, message: WorkerMessage) -> None:
        self.messages.append(message.model_dump(mode="json"))
        if self.stop is not None and isinstance(message, Progress) and message.step == self.stop_after:
            self.stop.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["kind"] == kind]

    def train_losses(self) -> list[float]:
        return [m["loss"] for m in self.of("progress") if m.get("loss") is not None]


def train(job: TrainingJob, stop_after: int | None = None) -> Collect:
    stop = threading.Event()
    report = Collect(stop, stop_after)
    run(job, report, stop)
    return report


@pytest.fixture(scope="module")
def teacher(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture and tokenizer as the student, different weights."""
    from services.core.ml.models import load_causal_lm, load_tokenizer

    out = tmp_path_factory.mktemp("teacher")
    model = load_causal_lm(tiny_model)
    torch.manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.save_pretrained(out)
    load_tokenizer(tiny_model).save_pretrained(out)
    return out


def _no_pickles(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]


@pytest.mark.parametrize("method", ["sft-lora", "dpo", "ipo", "kto", "distill"])
def test_adapter_methods_lower_the_loss_and_train_the_adapter(
    method: str, tiny_model: Path, teacher: Path, tmp_path: Path
) -> None:
    job = job_for(tmp_path, recipe(method), base_dir=tiny_model, teacher_dir=teacher)
    report = train(job)

    assert report.messages[0]["kind"] == "started"
    done = report.of("done")
    assert len(done) == 1 and done[0]["steps"] == 12
    losses = report.train_losses()
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert any(m.get("eval_loss") is not None for m in report.of("progress"))

    final = Path(done[0]["model_dir"])
    adapter = load_file(final / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # LoRA B starts at zero: it moved
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-llama"
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert len(report.of("checkpoint")) == 3  # steps 5, 10 and the last
    _no_pickles(Path(job.output_dir))


def test_precision_bf16_on_cpu_trains_fp32_weights_under_bf16_autocast(
    tiny_model: Path, tmp_path: Path
) -> None:
    from services.core.ml.models import load_tokenizer
    from services.training.methods import build_trainer

    job = job_for(tmp_path, recipe("sft-lora", precision="bf16"), base_dir=tiny_model)
    trainer = build_trainer(job, load_tokenizer(tiny_model), [])
    assert trainer.accelerator.mixed_precision == "bf16"
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    seen: list[torch.dtype] = []
    hook = (
        trainer.model.get_base_model()
        .model.layers[0]
        .self_attn.q_proj.base_layer.register_forward_hook(
            lambda module, args, output: seen.append(output.dtype)
        )
    )
    trainer.train()
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # the matmuls ran in bf16
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    fp32 = build_trainer(
        job_for(tmp_path / "fp32", recipe("sft-lora"), base_dir=tiny_model), load_tokenizer(tiny_model), []
    )
    assert fp32.accelerator.mixed_precision == "no"


def test_full_fine_tune_changes_the_base_weights(tiny_model: Path, tmp_path: Path) -> None:
    report = train(job_for(tmp_path, recipe("sft-full", learning_rate=1e-3), base_dir=tiny_model))
    losses = report.train_losses()
    assert losses[-1] < losses[0]
    final = Path(report.of("done")[0]["model_dir"])
    before, after = load_file(tiny_model / "model.safetensors"), load_file(final / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    assert (final / "tokenizer.json").exists()


def test_resumed_run_continues_exactly_where_the_checkpoint_left_off(
    tiny_model: Path, tmp_path: Path
) -> None:
    training = recipe("sft-lora")
    whole = train(job_for(tmp_path, training, base_dir=tiny_model))
    checkpoint = tmp_path / "out" / "checkpoint-10"
    _no_pickles(checkpoint)
    assert {"optimizer.safetensors", "scheduler.json", "rng_state.safetensors"} <= {
        p.name for p in checkpoint.iterdir()
    }

    resumed = train(
        job_for(tmp_path, training, base_dir=tiny_model, resume_from=str(checkpoint), output="out2")
    )
    assert resumed.of("started")[0]["resumed_from_step"] == 10
    steps = [m["step"] for m in resumed.of("progress") if m.get("loss") is not None]
    assert steps == [11, 12]
    # optimizer, scheduler, RNG and data order restored: the same losses as the uninterrupted run
    assert resumed.train_losses() == whole.train_losses()[10:]


def test_a_stop_request_ends_the_run_at_the_next_step(tiny_model: Path, tmp_path: Path) -> None:
    report = train(job_for(tmp_path, recipe("sft-lora", max_steps=200), base_dir=tiny_model), stop_after=3)
    assert report.of("done") == []
    cancelled = report.of("cancelled")
    assert len(cancelled) == 1 and cancelled[0]["step"] in (3, 4)


def test_a_checkpoint_holding_a_pickle_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    from services.training.checkpoints import CheckpointError

    bad = tmp_path / "ckpt"
    bad.mkdir()
    (bad / "optimizer.pt").write_bytes(b"\x80\x04not really")
    job = job_for(tmp_path, recipe("sft-lora"), base_dir=tiny_model, resume_from=str(bad))
    with pytest.raises((CheckpointError, ValueError)):
        train(job)


def test_self_replay_rows_train_on_the_base_models_own_answers(tiny_model: Path, tmp_path: Path) -> None:
    from services.core.ml.models import load_causal_lm, load_tokenizer
    from services.training.methods import answer_with_base, read_rows

    job = job_for(tmp_path, recipe("sft-lora"), base_dir=tiny_model, rows=8)
    rows = read_rows(job.train_file)
    for row in rows[:5]:
        row[SELF_REPLAY_KEY] = "base-model"
    rows.append(json.loads(json.dumps(rows[0])))  # an upsampled duplicate gets the same answer
    written = [r["messages"][-1]["content"] for r in rows]
    tokenizer = load_tokenizer(tiny_model)
    model = load_causal_lm(tiny_model)
    answered, generated, _, answers = answer_with_base(model, tokenizer, rows, max_new_tokens=12)
    assert (answered, generated, len(answers)) == (6, 5, 5)
    # one prompt alone, unpadded: the answer the batched pass must have written
    prompt = tokenizer.apply_chat_template(
        rows[2]["messages"][:-1], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    alone = model.generate(**ids, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.eos_token_id)
    expected = tokenizer.decode(alone[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert rows[2]["messages"][-1] == {"role": "assistant", "content": expected}
    assert [r["messages"][-1]["content"] for r in rows[5:8]] == written[5:8]  # unmarked: as written
    assert all(rows[i]["messages"][-1]["content"] != written[i] for i in range(5))
    assert rows[-1]["messages"] == rows[0]["messages"]


def test_a_run_whose_split_marks_rows_for_self_replay_trains_on_the_base_answers(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_for(tmp_path, recipe("sft-lora"), base_dir=tiny_model, rows=16)
    rows = [json.loads(line) for line in Path(job.train_file).read_text().splitlines()]
    marked = [{**row, SELF_REPLAY_KEY: "base-model"} if i % 2 else row for i, row in enumerate(rows)]
    Path(job.train_file).write_text("".join(json.dumps(r) + "\n" for r in marked))
    report = train(job)
    assert len(report.of("done")) == 1
    assert "self-replay: the base model answered 8 rows (8 answers generated" in capsys.readouterr().err
    # a second run on the same base reuses the stored answers
    again = job.model_copy(update={"output_dir": str(tmp_path / "again")})
    assert len(train(again).of("done")) == 1
    assert "answered 8 rows (0 answers generated" in capsys.readouterr().err


def test_a_max_steps_run_samples_the_rows_it_trains_keeping_canaries_and_the_self_replay_share() -> None:
    from services.training.methods import rows_within_steps

    rows: list[dict[str, Any]] = [{"id": i} for i in range(100)]
    for row in rows[:40]:
        row[SELF_REPLAY_KEY] = "base-model"
    rows[95][CANARY_KEY] = rows[97][CANARY_KEY] = True
    six_steps = recipe("sft-lora", max_steps=6, batch_size=4, seed=3)  # 24 rows of 100
    chosen = rows_within_steps(rows, six_steps, "sft")
    ids = [r["id"] for r in chosen]
    assert len(ids) == len(set(ids)) == 24 and ids == sorted(ids)
    assert {95, 97} <= set(ids)
    assert sum(r.get(SELF_REPLAY_KEY) == "base-model" for r in chosen) == 9  # 40 of 98 others → 9 of 22
    assert rows_within_steps(rows, six_steps, "sft") == chosen  # seeded: a resumed run trains the same rows
    assert rows_within_steps(rows, six_steps.model_copy(update={"seed": 4}), "sft") != chosen
    accumulated = recipe("sft-lora", max_steps=6, batch_size=4, gradient_accumulation=5)
    assert len(rows_within_steps(rows, accumulated, "sft")) == 100  # 120 rows asked: every row
    assert rows_within_steps(rows, recipe("sft-lora", max_steps=-1), "sft") == rows
    assert rows_within_steps(rows, recipe("sft-lora", max_steps=6, packing=True), "sft") == rows
    assert rows_within_steps(rows, recipe("dpo", max_steps=6), "preference") == rows


def test_self_replay_answers_only_the_rows_a_max_steps_run_trains(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_for(tmp_path, recipe("sft-lora", max_steps=3, batch_size=4), base_dir=tiny_model, rows=32)
    _mark_every_other_row_for_self_replay(job)
    report = train(job)
    assert len(report.of("done")) == 1 and report.of("done")[0]["steps"] == 3
    err = capsys.readouterr().err
    assert "max_steps 3: training on 12 of the split's 32 rows" in err
    assert "self-replay: the base model answered 6 rows (6 answers generated" in err


def _mark_every_other_row_for_self_replay(job: TrainingJob) -> None:
    rows = [json.loads(line) for line in Path(job.train_file).read_text().splitlines()]
    marked = [{**row, SELF_REPLAY_KEY: "base-model"} if i % 2 else row for i, row in enumerate(rows)]
    Path(job.train_file).write_text("".join(json.dumps(r) + "\n" for r in marked))


def _anchor_trainer(job: TrainingJob, tiny_model: Path) -> Any:
    from services.core.ml.models import load_tokenizer
    from services.training.methods import build_trainer

    trainer = build_trainer(job, load_tokenizer(tiny_model), [])
    trainer.model.train()
    return trainer


def test_replay_anchor_loss_weighs_kl_to_the_base_and_cross_entropy_by_row(
    tiny_model: Path, tmp_path: Path
) -> None:
    from services.training.methods import ANCHOR_COLUMN

    job = job_for(tmp_path, recipe("sft-lora", replay_anchor={"alpha": 1.0}), base_dir=tiny_model, rows=8)
    _mark_every_other_row_for_self_replay(job)
    trainer = _anchor_trainer(job, tiny_model)
    batch = next(iter(trainer.get_train_dataloader()))
    anchored = batch[ANCHOR_COLUMN].bool()
    assert 0 < int(anchored.sum()) < len(anchored)  # the batch holds both kinds of row

    def loss_of(rows: torch.Tensor) -> float:
        sub = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            return float(trainer.compute_loss(trainer.model, dict(sub)))

    # LoRA's B starts at zero: the adapter is the base, so the KL of self-replay rows is exactly 0
    assert loss_of(anchored) == pytest.approx(0.0, abs=1e-6)
    plain = {k: v[~anchored] for k, v in batch.items() if k != ANCHOR_COLUMN}
    with torch.no_grad():
        cross_entropy = trainer.model(**plain).loss
    assert loss_of(~anchored) == pytest.approx(float(cross_entropy), rel=1e-4)
    # alpha 0: self-replay rows are plain cross-entropy again
    trainer.anchor_alpha = 0.0
    assert loss_of(anchored) > 0.1
    # task_alpha 1: the other rows are held to the base too (KL 0 at the start)
    trainer.anchor_task_alpha = 1.0
    assert loss_of(~anchored) == pytest.approx(0.0, abs=1e-6)
    trainer.anchor_task_alpha = 0.5
    assert loss_of(~anchored) == pytest.approx(float(cross_entropy) / 2, rel=1e-4)


def test_replay_anchor_prompt_alpha_adds_the_kl_at_the_positions_that_read_the_prompt(
    tiny_model: Path, tmp_path: Path
) -> None:
    anchor = {"alpha": 1.0, "prompt_alpha": 0.5}
    lora = {"dropout": 0.0, "target_modules": ["all-linear"]}  # as the preflight's error suggests
    training = recipe("sft-lora", replay_anchor=anchor, lora=lora)
    job = job_for(tmp_path, training, base_dir=tiny_model, rows=8)
    _mark_every_other_row_for_self_replay(job)
    trainer = _anchor_trainer(job, tiny_model)
    assert trainer.anchor_prompt_alpha == 0.5
    adapted = {name.rsplit(".", 1)[-1] for name in trainer.model.peft_config["default"].target_modules}
    assert {"q_proj", "v_proj", "gate_proj", "down_proj"} <= adapted  # all-linear reached PEFT as such
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)  # the adapter now differs from the base everywhere

    def loss(prompt_alpha: float) -> float:
        trainer.anchor_prompt_alpha = prompt_alpha
        with torch.no_grad():
            return float(trainer.compute_loss(model, dict(batch)))

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        tuned = model(**inputs).logits[:, :-1].log_softmax(-1)
        with model.disable_adapter():
            base = model(**inputs).logits[:, :-1].log_softmax(-1)
    kl = (base.exp() * (base - tuned)).sum(-1)
    answer = batch["labels"][:, 1:] != -100
    prompt = batch["attention_mask"][:, 1:].bool() & ~answer
    assert int(prompt.sum()) > 0 and int(answer.sum()) > 0
    expected = 0.5 * float((kl * prompt).sum()) / int(answer.sum())
    assert expected > 1e-3
    assert loss(0.5) - loss(0.0) == pytest.approx(expected, rel=1e-3)
    model.eval()  # evaluation batches: plain cross-entropy, whatever the anchor
    assert loss(0.5) == pytest.approx(loss(0.0), rel=1e-6)


def _kl_to_base(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> float:
    """Mean KL(base ‖ adapter) per answer token of `rows`, teacher-forced on their answers."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            prompt = tokenizer.apply_chat_template(
                row["messages"][:-1], add_generation_prompt=True, tokenize=False
            )
            start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) - 1
            text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            tuned = model(**ids).logits[0, start:-1].log_softmax(-1)
            with model.disable_adapter():
                base = model(**ids).logits[0, start:-1].log_softmax(-1)
            total += float((base.exp() * (base - tuned)).sum())
            count += tuned.shape[0]
    return total / count


def test_replay_anchor_holds_an_adapter_trained_on_self_replay_rows_to_the_base(
    tiny_model: Path, tmp_path: Path
) -> None:
    """KL to the base is smallest at the base itself, so on self-replay rows alone the anchored
    adapter stays at the base's distributions; cross-entropy on the base's greedy answers sharpens
    them and moves the adapter away."""
    from peft import PeftModel

    from services.core.ml.models import load_causal_lm, load_tokenizer
    from services.training.methods import answer_with_base, read_rows

    tokenizer = load_tokenizer(tiny_model)
    distance: dict[str, float] = {}
    for name, anchor in (("plain", None), ("anchored", {"alpha": 1.0})):
        job = job_for(tmp_path / name, recipe("sft-lora", replay_anchor=anchor), base_dir=tiny_model)
        rows = [{**r, SELF_REPLAY_KEY: "base-model"} for r in read_rows(job.train_file)]
        Path(job.train_file).write_text("".join(json.dumps(r) + "\n" for r in rows))
        report = train(job)
        assert len(report.train_losses()) == 12
        model = PeftModel.from_pretrained(
            load_causal_lm(tiny_model), report.of("done")[0]["model_dir"]
        ).eval()
        with model.disable_adapter():  # what the worker trained on: the base's greedy answers
            answer_with_base(model, tokenizer, rows[:8], max_new_tokens=24)
        distance[name] = _kl_to_base(model, tokenizer, rows[:8])
    assert distance["anchored"] < distance["plain"] / 5, distance
