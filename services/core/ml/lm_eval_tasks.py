"""lm-evaluation-harness tasks as tuneline suites: a task directory (its YAML and its local data),
stored as one deterministic tar and checked before anything runs it.

Only what needs no code and no network is accepted: the YAML must load with `yaml.safe_load`
(so no `!function` hooks, which would import Python from the upload), `dataset_path` must be one
of datasets' local builders (json, csv, parquet, text) and every data file must lie inside the
directory. Evaluation unpacks the tar, points the data files at their unpacked paths and hands
the directory to lm-eval's TaskManager. Curation reads the data rows for contamination checks.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

PREFIX = "lm-eval:"
LOCAL_BUILDERS = ("json", "csv", "parquet", "text")


class TaskError(ValueError):
    """The task directory cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class TaskFiles:
    name: str
    yaml_name: str
    config: dict[str, Any]
    files: dict[str, bytes]  # relative path → content


def task_name(scorer: str) -> str | None:
    return scorer.removeprefix(PREFIX) if scorer.startswith(PREFIX) else None


def _members(data: bytes) -> dict[str, bytes]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            files = {}
            for member in tar.getmembers():
                path = PurePosixPath(member.name)
                if member.isdir():
                    continue
                if not member.isfile() or path.is_absolute() or ".." in path.parts:
                    raise TaskError(f"{member.name}: only plain files inside the task directory are accepted")
                extracted = tar.extractfile(member)
                files[path.as_posix()] = extracted.read() if extracted else b""
            return files
    except tarfile.TarError as error:
        raise TaskError(
            f"not a task directory upload ({error}); pass the directory holding the YAML"
        ) from None


def _data_files(config: dict[str, Any]) -> list[str]:
    value = (config.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [str(v) for v in value.values()]
    raise TaskError("dataset_kwargs.data_files must name the task's local data files")


def inspect(data: bytes, task: str) -> TaskFiles:
    """The task's YAML and data, refused unless it runs offline and imports nothing."""
    files = _members(data)
    for name, content in sorted(files.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        try:
            config = yaml.safe_load(content)
        except yaml.YAMLError as error:
            reason = str(error).splitlines()[0]
            raise TaskError(
                f"{name}: {reason}; tuneline runs no task code (`!function` hooks are refused): use "
                "built-in metrics and templates"
            ) from None
        if not isinstance(config, dict) or config.get("task") != task:
            continue
        if config.get("dataset_path") not in LOCAL_BUILDERS:
            raise TaskError(
                f"{name}: dataset_path {config.get('dataset_path')!r} would download; use one of "
                f"{', '.join(LOCAL_BUILDERS)} with dataset_kwargs.data_files inside the directory"
            )
        for path in _data_files(config):
            clean = PurePosixPath(path)
            if clean.is_absolute() or ".." in clean.parts or clean.as_posix() not in files:
                raise TaskError(f"{name}: data file {path!r} is not inside the task directory")
        return TaskFiles(task, name, config, files)
    raise TaskError(f"no YAML in the directory defines task {task!r}")


def unpack(data: bytes, task: str, target: Path) -> Path:
    """Write the task to `target` with its data files made absolute; returns the include path."""
    found = inspect(data, task)
    for name, content in found.files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    config = dict(found.config)
    kwargs = dict(config.get("dataset_kwargs") or {})
    value = kwargs["data_files"]
    if isinstance(value, dict):
        kwargs["data_files"] = {k: str(target / v) for k, v in value.items()}
    elif isinstance(value, list):
        kwargs["data_files"] = [str(target / v) for v in value]
    else:
        kwargs["data_files"] = str(target / value)
    config["dataset_kwargs"] = kwargs
    (target / found.yaml_name).write_text(yaml.safe_dump(config, sort_keys=True), encoding="utf-8")
    return target


def rows(data: bytes, task: str) -> list[dict[str, Any]]:
    """The task's documents as suite items (for contamination checks), with ids."""
    found = inspect(data, task)
    items: list[dict[str, Any]] = []
    for path in _data_files(found.config):
        content = found.files[PurePosixPath(path).as_posix()].decode("utf-8", errors="replace")
        if path.endswith((".jsonl", ".json")):
            lines = content.splitlines() if path.endswith(".jsonl") else []
            docs = [json.loads(line) for line in lines if line.strip()] if lines else json.loads(content)
        elif path.endswith(".csv"):
            docs = list(csv.DictReader(io.StringIO(content)))
        else:
            docs = [{"text": line} for line in content.splitlines() if line.strip()]
        for doc in docs if isinstance(docs, list) else []:
            if isinstance(doc, dict):
                items.append(
                    {**{k: v for k, v in doc.items() if k != "id"}, "id": f"{path}:{len(items) + 1}"}
                )
    return items
