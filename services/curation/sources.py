"""Read a submitted source (JSONL, Parquet, CSV, a saved `datasets` directory) into raw rows.

Each raw row keeps its 1-based number in the source so every finding can point at it. A line
that is not valid JSON is a row with a parse error, not a reason to stop reading.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON_COLUMNS = ("messages", "annotations")  # CSV cells holding JSON


class SourceError(Exception):
    """A whole source cannot be read (missing, unsafe, unreadable)."""


@dataclass
class RawRow:
    number: int
    value: Any = None
    error: str | None = None


def infer_format(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if p.is_dir():
        return "hf-dataset"
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    formats = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
    if suffix.lower() not in formats:
        raise SourceError(
            f"{path}: cannot tell the format from the extension {suffix!r}; use .jsonl, .parquet, .csv "
            "or a directory saved with datasets' save_to_disk"
        )
    return formats[suffix.lower()]


def read_rows(path: str | os.PathLike[str], fmt: str) -> Iterator[RawRow]:
    try:
        if fmt == "jsonl":
            yield from _jsonl(Path(path))
        elif fmt == "csv":
            yield from _csv(Path(path))
        elif fmt == "parquet":
            yield from _parquet(Path(path))
        elif fmt == "hf-dataset":
            yield from _hf_dataset(Path(path))
        else:
            raise SourceError(f"{path}: unknown format {fmt!r}")
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        if isinstance(error, SourceError):
            raise
        raise SourceError(f"{path}: cannot read it as {fmt}: {error}") from None


def _jsonl(path: Path) -> Iterator[RawRow]:
    with open(path, encoding="utf-8", errors="strict") as handle:
        number = 0
        for line in handle:
            if not line.strip():
                continue  # blank lines are not rows
            number += 1
            try:
                yield RawRow(number, json.loads(line))
            except json.JSONDecodeError as error:
                yield RawRow(number, error=f"not valid JSON ({error.msg} at column {error.colno})")


def _csv(path: Path) -> Iterator[RawRow]:
    with open(path, encoding="utf-8", newline="") as handle:
        for number, record in enumerate(csv.DictReader(handle), start=1):
            row: dict[str, Any] = {k: v for k, v in record.items() if k is not None}
            if None in record:
                yield RawRow(number, error="more cells than header columns")
                continue
            bad = None
            for column in JSON_COLUMNS:
                if isinstance(row.get(column), str) and row[column].strip():
                    try:
                        row[column] = json.loads(row[column])
                    except json.JSONDecodeError:
                        bad = f"column {column!r} must hold JSON in a CSV file"
                elif row.get(column) == "":
                    row.pop(column)
            yield RawRow(number, error=bad) if bad else RawRow(number, row)


def _parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield RawRow(number, record)


def _hf_dataset(path: Path) -> Iterator[RawRow]:
    """A directory written by `Dataset.save_to_disk` (Arrow files + JSON state; nothing pickled)."""
    if not (path / "dataset_info.json").exists() and not (path / "state.json").exists():
        raise SourceError(f"{path}: not a saved datasets directory (no state.json / dataset_info.json)")
    from datasets import Dataset, load_from_disk

    loaded = load_from_disk(str(path))
    if not isinstance(loaded, Dataset):
        raise SourceError(
            f"{path}: holds a DatasetDict; submit one split directory (e.g. {path}/train) per source"
        )
    for number, record in enumerate(loaded, start=1):
        yield RawRow(number, dict(record))
