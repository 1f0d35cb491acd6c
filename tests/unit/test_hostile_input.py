"""Hostile input gets a verdict, not retries, and never an unbounded cost: size and decompression bombs
in sources and uploads, NUL bytes and bad regexes at the contract, missing or tampered artifact bases."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import weakref
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from schemas.curation_policy import CurationPolicy
from schemas.dataset import DataSource
from schemas.gate_policy import GatePolicy
from schemas.recipe import TrainingRecipe
from services.core.artifacts import ArtifactStore
from services.core.messaging import uploads
from services.core.ml.bases import resolve_base_model
from services.core.ml.models import ModelResolutionError
from services.curation import pipeline
from services.curation.sources import SourceError, SourceLimits, read_rows
from tests.support.curation import submission, task_rows, write_jsonl

LIMITS = SourceLimits(max_source_bytes=10 * 1024**2, max_rows=1000, max_row_bytes=4096, max_expansion=20)


def test_a_row_over_the_size_limit_is_a_finding_and_is_never_parsed(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    huge = json.dumps({"prompt": "x" * 10_000, "completion": "y"})
    source.write_text(f'{{"prompt": "a", "completion": "b"}}\n{huge}\n{{"prompt": "c", "completion": "d"}}\n')
    rows = list(read_rows(source, "jsonl", LIMITS))
    assert [r.number for r in rows] == [1, 2, 3]
    assert rows[1].value is None and rows[1].error is not None and "over the limit of 4,096" in rows[1].error
    assert rows[2].value == {"prompt": "c", "completion": "d"}  # reading goes on


def test_too_many_rows_or_too_many_bytes_refuse_the_source(tmp_path: Path) -> None:
    source = tmp_path / "many.jsonl"
    source.write_text('{"prompt": "a", "completion": "b"}\n' * 1001)
    with pytest.raises(SourceError, match="more than 1,000 rows"):
        list(read_rows(source, "jsonl", LIMITS))
    with pytest.raises(SourceError, match="over the limit of 100"):
        list(read_rows(source, "jsonl", SourceLimits(max_source_bytes=100)))


def test_a_csv_field_over_the_csv_modules_limit_is_a_source_error_naming_the_row(tmp_path: Path) -> None:
    source = tmp_path / "wide.csv"
    source.write_text("prompt,completion\na,b\n" + "c," + "x" * (129 * 1024) + "\n")
    with pytest.raises(SourceError, match="row 2: field larger than field limit"):
        list(read_rows(source, "csv", LIMITS))


def test_a_parquet_decompression_bomb_is_refused_before_its_rows_are_built(tmp_path: Path) -> None:
    source = tmp_path / "bomb.parquet"
    column = pa.array(["z" * 1024] * 20_000).dictionary_encode()  # 20 MB of rows
    pq.write_table(pa.table({"prompt": column, "completion": column}), source, compression="zstd")
    assert source.stat().st_size < 64 * 1024
    with pytest.raises(SourceError, match="decompression bomb"):
        list(read_rows(source, "parquet", SourceLimits(max_row_bytes=1024**2)))
    ordinary = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", "d"]}), ordinary)
    first = next(read_rows(ordinary, "parquet", LIMITS))
    assert first.value == {"prompt": "a", "completion": "c"}


def test_curation_streams_its_sources_and_a_source_failing_part_way_adds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most the format look-ahead of raw rows is alive at once, however long the source: the
    audit parses each row as it is read instead of holding `list(read_rows(...))` beside the rows."""
    alive = peak = 0

    def counted(path: Path, fmt: str, limits: SourceLimits | None = None):  # type: ignore[no-untyped-def]
        def gone() -> None:
            nonlocal alive
            alive -= 1

        nonlocal alive, peak
        for row in read_rows(path, fmt, limits):
            alive += 1
            peak = max(peak, alive)
            weakref.finalize(row, gone)
            yield row

    monkeypatch.setattr(pipeline, "read_rows", counted)
    long = write_jsonl(tmp_path / "long.jsonl", task_rows(2000))
    # 3,000 rows, each fine, but over the policy's 2,500: refused when row 2,501 is read
    over = write_jsonl(tmp_path / "over.jsonl", task_rows(3000, seed=2)[:2500] + ["not json"] * 500)
    policy = CurationPolicy(canaries=0, max_rows_per_source=2500, max_invalid_fraction=0.5)
    result = pipeline.curate(
        submission(DataSource(uri=str(long)), DataSource(uri=str(over)), policy=policy),
        resolve=lambda s: Path(s.uri),
        tokenizer=None,
        suites=[],
    )
    # the look-ahead of both sources and the rows in flight; a list() of the sources would be 4,500
    assert peak <= pipeline.KIND_SAMPLE * 2 + 4, peak
    [summary] = result.sources
    assert summary.uri == str(long) and summary.rows == 2000
    [refused] = [f for f in result.audit.findings if f.check == "source"]
    assert refused.source == str(over) and "more than 2,500 rows" in refused.message
    assert not any(f.source == str(over) for f in result.audit.findings if f.check == "schema")
    assert not result.approved


def _tar(tmp_path: Path, build: object, mode: str = "w") -> tuple[Path, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        build(tar)  # type: ignore[operator]
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / sha / "data.tar"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path, sha


def test_uploaded_tars_are_plain_bounded_and_keep_their_links_inside(tmp_path: Path) -> None:
    def big_zeros(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 8 * 1024**2
        tar.addfile(info, io.BytesIO(bytes(info.size)))

    def absolute_link(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)

    gzipped, sha = _tar(tmp_path / "gz", big_zeros, mode="w:gz")  # 8 MB of zeros in ~8 KB
    assert gzipped.stat().st_size < 64 * 1024
    with pytest.raises(uploads.UploadError, match="refused as an upload"):
        uploads._verify_and_unpack(gzipped, sha, "upload:x/data.tar")
    assert not (gzipped.parent / "data").exists()

    plain, sha = _tar(tmp_path / "plain", big_zeros)
    with pytest.raises(uploads.UploadError, match="unpacks to 8,388,608 bytes, over the limit"):
        uploads._verify_and_unpack(plain, sha, "upload:x/data.tar", max_bytes=1024**2)

    linked, sha = _tar(tmp_path / "link", absolute_link)
    with pytest.raises(uploads.UploadError, match="AbsoluteLinkError"):
        uploads._verify_and_unpack(linked, sha, "upload:x/data.tar")


def test_nul_bytes_and_bad_regexes_are_refused_at_the_contract() -> None:
    with pytest.raises(ValidationError, match="uri"):
        DataSource(uri="upload:abc/da\x00ta.jsonl")
    with pytest.raises(ValidationError, match="base_model"):
        TrainingRecipe(base_model="tiny\x00llama")
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        GatePolicy(target_pattern="([a-z")
    assert GatePolicy(target_pattern=r"^\{.*\}$").target_pattern == r"^\{.*\}$"


def test_a_missing_or_tampered_artifact_base_is_a_resolution_error_or_is_fetched_again(
    tmp_path: Path, tiny_model: Path
) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    cache = tmp_path / "cache"
    with pytest.raises(ModelResolutionError, match="not in the store"):
        resolve_base_model("artifact:blobs/sha256/" + "0" * 64, cache, store)
    with pytest.raises(ModelResolutionError, match="not an artifact reference"):
        resolve_base_model("artifact:nothing-like-a-key", cache, store)

    ref = store.put_tree(tiny_model)
    name = f"artifact:{ref.key}"
    first = resolve_base_model(name, cache, store)
    weights = next(first.glob("*.safetensors"))
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"tampered")  # changed on disk after it was verified
    again = resolve_base_model(name, cache, store)
    assert again == first and next(again.glob("*.safetensors")).read_bytes() == original


def test_a_local_path_base_outside_the_allowed_roots_is_refused_without_saying_if_it_exists(
    tmp_path: Path, tiny_model: Path
) -> None:
    answers = []
    for path in (tiny_model, Path("/etc"), tmp_path / "no-such-dir"):
        with pytest.raises(ModelResolutionError) as refused:
            resolve_base_model(str(path), tmp_path / "cache", local_roots=(str(tmp_path / "allowed"),))
        answers.append(str(refused.value).replace(str(path), "<path>"))
    assert len(set(answers)) == 1 and "TUNELINE_MODEL_LOCAL_ROOTS" in answers[0]
    # inside an allowed root it resolves
    assert resolve_base_model(str(tiny_model), tmp_path / "cache", local_roots=(str(tiny_model.parent),))


def test_an_artifact_base_of_another_tenant_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.put_tree(tiny_model)
    store.claim(ref, "acme")
    name = f"artifact:{ref.key}"
    with pytest.raises(ModelResolutionError, match="belongs to tenant 'other'"):
        resolve_base_model(name, tmp_path / "cache", store, tenant="other")
    assert resolve_base_model(name, tmp_path / "cache", store, tenant="acme").is_dir()
    store.claim(ref, "other")  # the same bytes produced for a second tenant: both own them
    assert resolve_base_model(name, tmp_path / "cache", store, tenant="other").is_dir()
