"""Content-addressed artifact store: verified reads, no escapes from the root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from services.core.artifacts import (
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    PathEscapeError,
)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "store"))


def test_put_and_read_bytes_by_content_hash(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"hello")
    assert ref.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert ref.key == f"blobs/sha256/{ref.sha256[:2]}/{ref.sha256}"
    assert store.read_bytes(ref) == b"hello"
    assert store.put_bytes(b"hello") == ref  # idempotent


def test_tampered_blob_is_refused(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"weights")
    Path(store.path_for(ref.key)).write_bytes(b"evil")
    with pytest.raises(IntegrityError, match="expected"):
        store.read_bytes(ref)
    with pytest.raises(IntegrityError):
        store.verify(ref)


def test_fetch_file_removes_a_bad_copy(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put_bytes(b"abc")
    Path(store.path_for(ref.key)).write_bytes(b"abd")
    target = tmp_path / "out" / "f.bin"
    with pytest.raises(IntegrityError):
        store.fetch_file(ref, target)
    assert not target.exists()


@pytest.mark.parametrize(
    "key",
    [
        "../outside",
        "blobs/../../outside",
        "/etc/passwd",
        "s3://other/bucket",
        "a\\b",
        "",
        ".",
        "blobs/%2e%2e/x",
    ],
)
def test_keys_that_escape_the_root_are_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(PathEscapeError):
        store.path_for(key)


def test_symlink_out_of_the_root_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, Path(store.root) / "link")
    with pytest.raises(PathEscapeError, match="symlink"):
        store.path_for("link/secret")


def test_large_file_streams_in_and_out(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    ref = store.put_file(source)
    assert ref.size_bytes == source.stat().st_size
    copy = store.fetch_file(ref, tmp_path / "copy.bin")
    assert copy.read_bytes() == source.read_bytes()


def test_tree_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_config.json").write_text("{}")
    (src / "sub" / "adapter_model.safetensors").write_bytes(b"\x00" * 100)
    ref = store.put_tree(src)
    out = store.fetch_tree(ref, tmp_path / "restored")
    assert (out / "adapter_config.json").read_text() == "{}"
    assert (out / "sub" / "adapter_model.safetensors").read_bytes() == b"\x00" * 100


def test_missing_blob_says_so(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"x")
    os.remove(store.path_for(ref.key))
    with pytest.raises(ArtifactNotFound, match="not in the store"):
        store.read_bytes(ref)
