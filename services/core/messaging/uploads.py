"""Submitted files travel through a JetStream object store, so the CLI needs only the NATS URL.

`tuneline submit data.jsonl` puts the file into the bucket `tuneline_uploads` under
`<sha256>/<file name>` and sends `upload:<sha256>/<file name>` as the source URI; curation fetches it
into a private work directory and checks the sha256 again. A directory (a saved `datasets`
dataset) is packed into a deterministic tar first and unpacked with tarfile's `data` filter, which
refuses absolute paths, links out of the tree and device files.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, ObjectNotFoundError

from schemas.subjects import UPLOADS_BUCKET
from services.core.artifacts import sha256_file

BUCKET = UPLOADS_BUCKET
PREFIX = "upload:"
MAX_UNPACKED_BYTES = 2 * 1024**3  # an uploaded directory, unpacked


class UploadError(Exception):
    pass


def pack_directory(directory: Path) -> bytes:
    """A tar of the directory with fixed metadata: the same files always give the same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            if path.is_symlink():
                raise UploadError(f"{path}: symlinks are not uploaded; copy the file instead")
            info = tarfile.TarInfo(path.relative_to(directory).as_posix())
            info.size = path.stat().st_size
            info.mtime = 0
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


async def _bucket(js: JetStreamContext, *, create: bool, replicas: int = 1) -> object:
    try:
        return await js.object_store(BUCKET)
    except BucketNotFoundError:
        if not create:
            raise UploadError(
                f"no upload bucket {BUCKET!r} on this NATS; submit with `tuneline submit`"
            ) from None
        config = ObjectStoreConfig(
            bucket=BUCKET,
            description="Files sent by `tuneline submit`",
            storage=StorageType.FILE,
            replicas=replicas,
        )
        return await js.create_object_store(BUCKET, config=config)


def _payload(path: Path) -> tuple[bytes, str]:
    if path.is_dir():
        return pack_directory(path), ".tar"
    return path.read_bytes(), ""


async def upload(js: JetStreamContext, path: Path, *, replicas: int = 1) -> tuple[str, str]:
    """Upload a file or directory; returns (source uri, sha256 of what was uploaded)."""
    data, suffix = await asyncio.to_thread(_payload, path)
    sha = hashlib.sha256(data).hexdigest()
    name = f"{sha}/{path.name}{suffix}"
    store = await _bucket(js, create=True, replicas=replicas)
    try:
        await store.get_info(name)  # type: ignore[attr-defined]
    except ObjectNotFoundError:
        await store.put(name, data)  # type: ignore[attr-defined]
    return PREFIX + name, sha


async def download(js: JetStreamContext, uri: str, work_dir: Path) -> Path:
    """Fetch an `upload:` source into work_dir; returns the file (or unpacked directory)."""
    name = uri.removeprefix(PREFIX)
    sha, _, filename = name.partition("/")
    if len(sha) != 64 or not filename or "/" in filename or filename in {".", ".."}:
        raise UploadError(f"{uri}: not an upload reference (upload:<sha256>/<file name>)")
    store = await _bucket(js, create=False)
    target = work_dir / sha / filename
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    try:
        with open(target, "wb") as out:  # noqa: ASYNC230 (chunks are written in an executor)
            await store.get(name, writeinto=out)  # type: ignore[attr-defined]
    except ObjectNotFoundError:
        raise UploadError(f"{uri}: not in the upload bucket (expired or never uploaded?)") from None
    return await asyncio.to_thread(_verify_and_unpack, target, sha, uri)


MAX_MEMBERS = 10_000  # files in one uploaded directory


def _verify_and_unpack(target: Path, sha: str, uri: str, max_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    digest = sha256_file(target)
    if digest != sha:
        target.unlink()
        raise UploadError(f"{uri}: downloaded content has sha256 {digest}, expected {sha}")
    if target.name.endswith(".tar"):
        directory = target.with_suffix("")
        try:
            # "r:" reads a plain tar only, as `pack_directory` writes it: no compression is
            # auto-detected, so a small upload cannot unpack into gigabytes (a tar bomb)
            with tarfile.open(target, mode="r:") as tar:
                members = tar.getmembers()
                if len(members) > MAX_MEMBERS:
                    raise UploadError(f"{uri}: {len(members):,} files, over the limit of {MAX_MEMBERS:,}")
                size = sum(m.size for m in members)
                if size > max_bytes:
                    raise UploadError(f"{uri}: unpacks to {size:,} bytes, over the limit of {max_bytes:,}")
                tar.extractall(directory, members=members, filter="data")
        except tarfile.TarError as error:  # not a plain tar; or an absolute or escaping link
            raise UploadError(f"{uri}: refused as an upload ({type(error).__name__}: {error})") from None
        finally:
            os.remove(target)
        return directory
    return target
