"""The curation pipeline on crafted data: each check fires, points at the right rows, and the
curated copy is deterministic. Plain function calls with the tiny model's real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.curation_policy import CurationPolicy
from schemas.dataset import DataSource
from services.core.artifacts import ArtifactStore
from services.core.ml.suite_catalogue import register_suite, registered_suites
from services.curation.pipeline import Tokenizer, curate
from services.curation.sources import SourceLimits
from tests.support.curation import check, findings, lines, replay_mix, run, submission, task_rows, write_jsonl


def test_clean_data_is_approved_with_a_held_out_split(tmp_path: Path, tokenizer: Tokenizer) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", task_rows(40))
    result = run(tokenizer, DataSource(uri=str(src)))
    assert result.approved, [c for c in result.audit.checks if not c.passed]
    assert result.split_rows == {"train": 32, "validation": 4, "test": 4}
    train = lines(result.splits["train"])
    assert train[0]["messages"][0]["role"] == "user" and train[0]["messages"][1]["role"] == "assistant"
    assert check(result, "token-length").passed and result.token_stats["max"] > 10


def test_schema_errors_name_row_and_field_and_reject(tmp_path: Path, tokenizer: Tokenizer) -> None:
    rows: list[Any] = task_rows(20)
    rows[2] = {"prompt": "only a prompt"}
    rows[6] = {"prompt": 5, "completion": "x"}
    rows[9] = "{not json"
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run(tokenizer, DataSource(uri=str(src)))
    assert not result.approved and not check(result, "schema").passed
    got = {(f.row, f.field) for f in findings(result, "schema")}
    assert got == {(3, "completion"), (7, "prompt"), (10, None)}
    assert "not valid JSON" in next(f.message for f in findings(result, "schema") if f.row == 10)
    assert result.splits == {}


def test_tolerated_schema_errors_are_dropped_not_rejected(tmp_path: Path, tokenizer: Tokenizer) -> None:
    rows: list[Any] = task_rows(20)
    rows[4] = {"completion": "no prompt"}
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run(
        tokenizer, DataSource(uri=str(src)), policy=CurationPolicy(max_invalid_fraction=0.1, canaries=0)
    )
    assert result.approved and sum(result.split_rows.values()) == 19


def test_empty_completions_are_dropped_and_too_many_reject(tmp_path: Path, tokenizer: Tokenizer) -> None:
    rows = task_rows(20)
    rows[3]["completion"] = "   \n"
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run(tokenizer, DataSource(uri=str(src)))
    assert result.approved
    assert [f.row for f in findings(result, "empty-completions")] == [4]
    strict = run(
        tokenizer, DataSource(uri=str(src)), policy=CurationPolicy(max_empty_fraction=0.0, canaries=0)
    )
    assert not strict.approved and not check(strict, "empty-completions").passed


def test_overlong_rows_are_reported_with_their_token_count(tmp_path: Path, tokenizer: Tokenizer) -> None:
    rows = task_rows(30)
    rows[5]["completion"] = "word " * 400
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run(tokenizer, DataSource(uri=str(src)), max_seq_len=128)
    over = findings(result, "token-length")
    assert [f.row for f in over] == [6] and "> max_seq_len 128" in over[0].message
    assert result.approved and result.token_stats["max_seq_len"] == 128
    assert result.token_stats["max"] > 128  # statistics cover every row, the dropped one included
    rejected = run(tokenizer, DataSource(uri=str(src)), max_seq_len=16)
    assert not check(rejected, "token-length").passed


def test_duplicate_groups_are_reported_and_one_row_kept(tmp_path: Path, tokenizer: Tokenizer) -> None:
    rows = task_rows(30)
    rows.append(dict(rows[4]))  # row 31 = row 5
    rows.append({**rows[8], "prompt": rows[8]["prompt"].upper() + "!!"})  # row 32 = row 9 after normalization
    rows.append({**rows[12], "completion": rows[12]["completion"] + " ok"})  # row 33 ≈ row 13
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run(tokenizer, DataSource(uri=str(src)))
    dups = {f.row: f for f in findings(result, "duplicates")}
    assert set(dups) == {31, 32, 33}
    assert dups[31].related_rows == (5,) and "exact duplicate of row 5" in dups[31].message
    assert "near-duplicate of row 13" in dups[33].message
    assert sum(result.split_rows.values()) == 30
    assert "2 exact groups" in check(result, "duplicates").detail


def test_pii_is_redacted_in_the_curated_copy_and_the_source_is_untouched(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    rows = task_rows(20)
    rows[1]["prompt"] += " mail me at bob@example.com or call 555-201-7733"
    rows[2]["completion"] = "card 4111 1111 1111 1111"
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    before = src.read_bytes()
    result = run(tokenizer, DataSource(uri=str(src)), policy=CurationPolicy(eval_fraction=0.05, canaries=0))
    assert src.read_bytes() == before
    assert result.pii_counts == {"email": 1, "phone": 1, "credit_card": 1}
    assert [f.row for f in findings(result, "pii")] == [2, 3]
    curated = b"".join(result.splits.values())
    assert b"bob@example.com" not in curated and b"[EMAIL]" in curated and b"[CREDIT_CARD]" in curated
    rejected = run(
        tokenizer, DataSource(uri=str(src)), policy=CurationPolicy(pii_action="reject", canaries=0)
    )
    assert not rejected.approved and not check(rejected, "pii").passed


def test_contaminated_rows_are_removed_and_name_the_suite_item(tmp_path: Path, tokenizer: Tokenizer) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    item = "what is the boiling point of water at sea level in degrees celsius exactly please answer"
    register_suite(
        store, "capability", json.dumps({"id": "boil-1", "prompt": item, "answer": "100"}).encode(), "exact"
    )
    rows = task_rows(30)
    rows[7]["prompt"] = "Quiz time: " + item + " and explain"
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run(tokenizer, DataSource(uri=str(src)), suites=registered_suites(store),
                 policy=CurationPolicy(eval_fraction=0.05, canaries=0))  # fmt: skip
    bad = findings(result, "contamination")
    assert [f.row for f in bad] == [8] or (not bad and result.split_rows["test"])  # held out instead
    if bad:
        assert "'capability' item 'boil-1'" in bad[0].message
        assert item.split()[3].encode() not in result.splits["train"]


def test_a_given_eval_split_wins_and_overlapping_train_rows_are_removed(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    rows = task_rows(30)
    evals = [*task_rows(6, seed=9)[:3], {"prompt": rows[10]["prompt"], "completion": "different answer"}]
    evals[0] = {**evals[0], "prompt": evals[0]["prompt"] + " (eval)"}
    train_src = write_jsonl(tmp_path / "train.jsonl", rows)
    eval_src = write_jsonl(tmp_path / "eval.jsonl", evals)
    result = run(tokenizer, DataSource(uri=str(train_src)), DataSource(uri=str(eval_src), split="eval"))
    assert result.approved
    leaked = findings(result, "split-disjointness")
    assert [f.row for f in leaked] == [11] and "same prompt as held-out row 4" in leaked[0].message
    # the first eval row is the first train row's ticket (same customer, order, item and case) with
    # filler words and "(eval)" changed: a near-duplicate, so the train copy goes and the eval row stays
    [near] = [f for f in findings(result, "duplicates") if "near-duplicate" in f.message]
    assert near.source.endswith("train.jsonl") and "eval.jsonl" in near.message
    train, held = lines(result.splits["train"]), lines(result.splits["test"])
    validation = lines(result.splits["validation"])
    assert len(held) == 4 and len(validation) == 3 and len(train) == 25
    prompts = {m["messages"][0]["content"] for m in train}
    validation_prompts = {m["messages"][0]["content"] for m in validation}
    held_prompts = {m["messages"][0]["content"] for m in held}
    assert not prompts & held_prompts and not prompts & validation_prompts
    assert not validation_prompts & held_prompts


@pytest.mark.parametrize(
    ("annotations", "approved", "method"),
    [
        ([["good", "good"], ["bad", "bad"]] * 10, True, "Cohen"),
        ([["good", "bad"], ["bad", "good"], ["good", "good"]] * 7, False, "Cohen"),
        ([["a", "a", "a"], ["b", "b", "b"]] * 10 + [["a", "a", "b"]], True, "Fleiss"),
        ([["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]] * 7, False, "Fleiss"),
    ],
)
def test_label_agreement_rejects_below_kappa_threshold(
    tmp_path: Path, tokenizer: Tokenizer, annotations: list[list[str]], approved: bool, method: str
) -> None:
    rows = task_rows(len(annotations))
    for row, labels in zip(rows, annotations, strict=True):
        row["annotations"] = labels
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run(tokenizer, DataSource(uri=str(src)))
    agreement = check(result, "label-agreement")
    assert agreement.passed is approved and result.approved is approved
    assert method in agreement.detail and agreement.threshold == 0.70


def test_boilerplate_is_flagged_counted_and_optionally_dropped(tmp_path: Path, tokenizer: Tokenizer) -> None:
    rows = task_rows(20)
    rows[0]["completion"] = "As an AI language model, I think " + rows[0]["completion"]
    rows[5]["completion"] = "Certainly! Here is the JSON: " + rows[5]["completion"]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    kept = run(
        tokenizer, DataSource(uri=str(src)), policy=CurationPolicy(max_boilerplate_fraction=0.2, canaries=0)
    )
    assert [f.row for f in findings(kept, "boilerplate")] == [1, 6]
    assert check(kept, "boilerplate").value == pytest.approx(0.1) and kept.approved
    assert b"Certainly! Here" in b"".join(kept.splits.values())
    dropped = run(
        tokenizer, DataSource(uri=str(src)), policy=CurationPolicy(drop_boilerplate=True, canaries=0)
    )
    assert b"Certainly! Here" not in b"".join(dropped.splits.values())
    strict = run(
        tokenizer, DataSource(uri=str(src)), policy=CurationPolicy(max_boilerplate_fraction=0.05, canaries=0)
    )
    assert not strict.approved


def test_same_data_gives_the_same_id_and_one_changed_row_changes_it(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    rows = task_rows(30)
    first = run(tokenizer, DataSource(uri=str(write_jsonl(tmp_path / "a.jsonl", rows))), mix=replay_mix())
    again = run(tokenizer, DataSource(uri=str(write_jsonl(tmp_path / "b.jsonl", rows))), mix=replay_mix())
    assert first.approved and first.dataset_id == again.dataset_id and first.splits == again.splits
    rows[17]["completion"] = rows[17]["completion"].replace("}", ', "note": 1}')
    changed = run(tokenizer, DataSource(uri=str(write_jsonl(tmp_path / "c.jsonl", rows))), mix=replay_mix())
    assert changed.dataset_id != first.dataset_id
    reseeded = run(
        tokenizer, DataSource(uri=str(write_jsonl(tmp_path / "d.jsonl", task_rows(30)))), mix=replay_mix(4)
    )
    assert reseeded.dataset_id != first.dataset_id  # the mix seed is part of what was curated


def test_every_source_format_gives_the_same_dataset(tmp_path: Path, tokenizer: Tokenizer) -> None:
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = task_rows(24)
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with open(tmp_path / "d.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(rows)
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    ids = {
        fmt: run(tokenizer, DataSource(uri=str(path), format=fmt)).dataset_id  # type: ignore[arg-type]
        for fmt, path in (
            ("jsonl", jsonl),
            ("parquet", tmp_path / "d.parquet"),
            ("csv", tmp_path / "d.csv"),
            ("hf-dataset", tmp_path / "hf"),
        )
    }
    assert len(set(ids.values())) == 1, ids


def test_unreadable_source_and_missing_tokenizer_reject_with_reasons(tmp_path: Path) -> None:
    result = curate(
        submission(DataSource(uri=str(tmp_path / "missing.jsonl"))),
        resolve=lambda s: Path(s.uri),
        tokenizer=None,
        suites=[],
        tokenizer_error="base model 'nope': not found",
    )
    assert not result.approved and "no such file" in findings(result, "source")[0].message.lower()


def test_a_policy_may_lower_the_source_limits_but_never_raise_them(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    rows = task_rows(40)
    rows[5]["prompt"] += " " + "word " * 200  # ~1 KB: fine for the server, over this policy's limit
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    strict = CurationPolicy(canaries=0, max_row_bytes=512, max_invalid_fraction=0.1)
    result = run(tokenizer, DataSource(uri=str(src)), policy=strict)
    [finding] = findings(result, "schema")
    assert finding.row == 6 and "over the limit of 512" in finding.message
    few = run(tokenizer, DataSource(uri=str(src)), policy=CurationPolicy(canaries=0, max_rows_per_source=10))
    assert any("more than 10 rows" in f.message for f in findings(few, "source")) and not few.approved
    # a policy asking for more than the server allows gets the server's limit
    loose = curate(
        submission(DataSource(uri=str(src)), policy=CurationPolicy(canaries=0, max_row_bytes=10**9)),
        resolve=lambda s: Path(s.uri),
        tokenizer=tokenizer,
        suites=[],
        limits=SourceLimits(max_row_bytes=256),
    )
    assert any("over the limit of 256" in f.message for f in findings(loose, "schema"))
