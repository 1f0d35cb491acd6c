"""Content-addressed artifact store over fsspec: local directory by default, s3:// in production.

Blobs live at `blobs/sha256/<2 hex>/<64 hex>`; every read is verified against its sha256, and
no key may leave the store root.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from schemas.refs import ArtifactRef

CHUNK = 1024 * 1024
_KEY_RE = re.compile(r"^[A-Za-z0-9._/-]+$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ArtifactError(Exception):
    """Base of artifact-store errors."""


class PathEscapeError(ArtifactError):
    """A key that would leave the store root."""


class IntegrityError(ArtifactError):
    """Stored bytes do not match the sha256 they are referenced by."""


class ArtifactNotFound(ArtifactError):
    pass


class ForeignArtifactError(ArtifactError):
    """An artifact another tenant owns (or none does), named by a tenant's submission."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require_digest(ref: ArtifactRef, actual: str) -> None:
    if actual != ref.sha256:
        raise IntegrityError(
            f"artifact {ref.key}: sha256 is {actual}, expected {ref.sha256}; "
            "the stored bytes were changed or corrupted, re-publish the artifact"
        )


def blob_key(sha256: str) -> str:
    if not _SHA_RE.match(sha256):
        raise ArtifactError(f"{sha256!r} is not a lower-case hex sha256")
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


class ArtifactStore:
    """Put and get immutable blobs and directory trees by content hash."""

    def __init__(self, root: str) -> None:
        self.fs, path = fsspec.core.url_to_fs(root)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            path = os.path.realpath(path)
            self.fs.makedirs(path, exist_ok=True)
        self.root = path.rstrip("/")
        self.url = root

    # -- keys ------------------------------------------------------------------------------
    def path_for(self, key: str) -> str:
        """The filesystem path of `key`, refusing anything that escapes the root."""
        if not key or key.startswith("/") or "\\" in key or "://" in key:
            raise PathEscapeError(
                f"artifact key {key!r} must be a relative path inside the store, like "
                "blobs/sha256/ab/<sha256>"
            )
        if not _KEY_RE.match(key):
            raise PathEscapeError(f"artifact key {key!r} has characters outside [A-Za-z0-9._/-]")
        normalized = posixpath.normpath(key)
        if normalized.startswith("..") or normalized == ".":
            raise PathEscapeError(f"artifact key {key!r} escapes the store root {self.url!r}")
        full = f"{self.root}/{normalized}"
        if self.is_local:
            real = os.path.realpath(full)
            if os.path.commonpath([real, self.root]) != self.root:
                raise PathEscapeError(
                    f"artifact key {key!r} resolves outside the store root {self.url!r} (through a symlink?)"
                )
        return full

    # -- blobs -----------------------------------------------------------------------------
    def put_bytes(self, data: bytes, media_type: str = "application/octet-stream") -> ArtifactRef:
        sha = hashlib.sha256(data).hexdigest()
        key = blob_key(sha)
        if not self.exists(key):
            self._atomic_write(key, [data])
        return ArtifactRef(key=key, sha256=sha, size_bytes=len(data), media_type=media_type)

    def put_json(self, value: Any) -> ArtifactRef:
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        return self.put_bytes(data, media_type="application/json")

    def put_file(
        self, path: str | os.PathLike[str], media_type: str = "application/octet-stream"
    ) -> ArtifactRef:
        """Stream a file in (hash first, then copy): memory stays flat however large it is."""
        sha = sha256_file(path)
        key = blob_key(sha)
        size = os.path.getsize(path)
        if not self.exists(key):
            with open(path, "rb") as handle:
                self._atomic_write(key, iter(lambda: handle.read(CHUNK), b""))
        return ArtifactRef(key=key, sha256=sha, size_bytes=size, media_type=media_type)

    def _atomic_write(self, key: str, chunks: Any) -> None:
        final = self.path_for(key)
        tmp = self.path_for(f"tmp/{uuid.uuid4().hex}")
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        self.fs.makedirs(posixpath.dirname(tmp), exist_ok=True)
        with self.fs.open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        self.fs.mv(tmp, final)

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self.path_for(key)))

    def read_bytes(self, ref: ArtifactRef) -> bytes:
        """Read and verify; a mismatch raises `IntegrityError` and returns nothing."""
        path = self.path_for(ref.key)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {ref.key} is not in the store {self.url!r}") from None
        _require_digest(ref, hashlib.sha256(data).hexdigest())
        return bytes(data)

    def read_json(self, ref: ArtifactRef) -> Any:
        return json.loads(self.read_bytes(ref))

    def verify(self, ref: ArtifactRef) -> None:
        """Stream-hash a stored blob (for large files) and raise on mismatch."""
        digest = hashlib.sha256()
        for chunk in self._iter_chunks(ref.key):
            digest.update(chunk)
        _require_digest(ref, digest.hexdigest())

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle: IO[bytes] = self.fs.open(self.path_for(key), "rb")
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {key} is not in the store {self.url!r}") from None
        with handle:
            yield from iter(lambda: handle.read(CHUNK), b"")

    def fetch_file(self, ref: ArtifactRef, destination: str | os.PathLike[str]) -> Path:
        """Copy a blob to a local file, verifying while streaming; a bad copy is removed."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(destination, "wb") as out:
            for chunk in self._iter_chunks(ref.key):
                digest.update(chunk)
                out.write(chunk)
        try:
            _require_digest(ref, digest.hexdigest())
        except IntegrityError:
            destination.unlink()
            raise
        return destination

    # -- named pointers (mutable, small JSON: e.g. the catalogue of registered eval suites) --
    def put_named_json(self, key: str, value: Any) -> None:
        if not key.startswith("refs/"):
            raise PathEscapeError(f"named artifact {key!r} must live under refs/")
        data = json.dumps(value, sort_keys=True, indent=1).encode()
        self._atomic_write(key, [data])

    def read_named_json(self, key: str) -> Any:
        try:
            return json.loads(self.fs.cat_file(self.path_for(key)))
        except FileNotFoundError:
            raise ArtifactNotFound(f"{key} is not in the store {self.url!r}") from None

    def list_keys(self, prefix: str) -> list[str]:
        """Keys directly under `prefix` (a folder), sorted."""
        folder = self.path_for(prefix.rstrip("/"))
        if not self.fs.exists(folder):
            return []
        names = self.fs.ls(folder, detail=False)
        return sorted(f"{prefix.rstrip('/')}/{posixpath.basename(str(n))}" for n in names)

    # -- tenants -----------------------------------------------------------------------------
    # Content addressing alone would let any tenant that learns a key read another's data (a
    # submission for tenant `other` naming `artifact:<acme's split>` was trained). So the service
    # that produces an artifact records the tenant it produced it for, and a submission may name
    # only artifacts its own tenant owns. One blob can belong to several tenants (same bytes).
    def claim(self, ref: ArtifactRef, tenant: str) -> None:
        """Record that `tenant` owns `ref` (the producing service calls this)."""
        if not _TENANT_RE.match(tenant):
            raise ArtifactError(f"tenant {tenant!r} is not a tenant name")
        self._atomic_write(f"owners/{ref.sha256}/{tenant}", [b""])

    def owners(self, sha256: str) -> set[str]:
        if not _SHA_RE.match(sha256):
            raise ArtifactError(f"{sha256!r} is not a lower-case hex sha256")
        return {posixpath.basename(k) for k in self.list_keys(f"owners/{sha256}")}

    def require_owner(self, sha256: str, tenant: str, what: str) -> None:
        """Refuse `what` unless `tenant` owns the artifact; the same words whether it exists or not."""
        if tenant not in self.owners(sha256):
            raise ForeignArtifactError(
                f"{what}: no artifact with sha256 {sha256[:12]}… belongs to tenant {tenant!r}; a "
                "submission may name only its own tenant's artifacts (upload the data with "
                "`tuneline submit` instead)"
            )

    # -- trees (a directory: a JSON manifest of relative path → blob) ----------------------
    def put_tree(self, directory: str | os.PathLike[str]) -> ArtifactRef:
        base = Path(directory)
        if not base.is_dir():
            raise ArtifactError(f"{directory} is not a directory")
        entries = {}
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            if path.is_symlink():
                raise ArtifactError(f"{path}: symlinks are not stored; copy the file instead")
            ref = self.put_file(path)
            entries[path.relative_to(base).as_posix()] = {
                "sha256": ref.sha256,
                "size": ref.size_bytes,
            }
        manifest = self.put_json({"kind": "tree", "files": entries})
        return manifest.model_copy(update={"media_type": "application/vnd.tuneline.tree+json"})

    def fetch_tree(self, ref: ArtifactRef, destination: str | os.PathLike[str]) -> Path:
        manifest = self.read_json(ref)
        if manifest.get("kind") != "tree":
            raise ArtifactError(f"artifact {ref.key} is not a tree manifest")
        out = Path(destination).resolve()
        for relative, entry in manifest["files"].items():
            target = (out / relative).resolve()
            if out not in target.parents:
                raise PathEscapeError(f"tree entry {relative!r} escapes {out}")
            blob = ArtifactRef(
                key=blob_key(entry["sha256"]), sha256=entry["sha256"], size_bytes=entry["size"]
            )
            self.fetch_file(blob, target)
        return out
