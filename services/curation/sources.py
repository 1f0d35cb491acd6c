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
    """A whole source cannot be read (missing, unsafe, unreadable, over a limit)."""


@dataclass(frozen=True)
class SourceLimits:
    """What one source may cost to read (`TUNELINE_CURATION_MAX_*`): a 796-byte Parquet file can hold
    200 MB of rows and a 34 MB JSON line took curation to a 6.4 GB peak. Over a limit, the source
    is refused with a finding (a whole source) or the row is (one row)."""

    max_source_bytes: int = 2 * 1024**3
    max_rows: int = 1_000_000
    max_row_bytes: int = 1024 * 1024
    max_expansion: float = 20.0  # Parquet: uncompressed bytes per byte on disk

    def tightened(self, max_rows: int | None, max_row_bytes: int | None) -> SourceLimits:
        """These limits, lowered by a submission's policy (a policy can never raise them)."""
        return SourceLimits(
            max_source_bytes=self.max_source_bytes,
            max_rows=min(self.max_rows, max_rows or self.max_rows),
            max_row_bytes=min(self.max_row_bytes, max_row_bytes or self.max_row_bytes),
            max_expansion=self.max_expansion,
        )

    def row_too_large(self, size: int) -> str:
        return (
            f"the row is {size:,} bytes, over the limit of {self.max_row_bytes:,} "
            "(TUNELINE_CURATION_MAX_ROW_BYTES); split it or drop it"
        )


@dataclass
class RawRow:
    number: int
    value: Any = None
    error: str | None = None


def read_rows(path: str | os.PathLike[str], fmt: str, limits: SourceLimits | None = None) -> Iterator[RawRow]:
    """The source's rows, one at a time (never the whole file in memory), within `limits`."""
    limits = limits or SourceLimits()
    source = Path(path)
    readers = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "hf-dataset": _hf_dataset}
    if fmt not in readers:
        raise SourceError(f"{path}: unknown format {fmt!r}")
    try:
        size = _size(source)
        if size > limits.max_source_bytes:
            raise SourceError(
                f"{path}: {size:,} bytes, over the limit of {limits.max_source_bytes:,} "
                "(TUNELINE_CURATION_MAX_SOURCE_BYTES); split the source"
            )
        for count, row in enumerate(readers[fmt](source, limits), start=1):
            if count > limits.max_rows:
                raise SourceError(
                    f"{path}: more than {limits.max_rows:,} rows (TUNELINE_CURATION_MAX_ROWS); split "
                    "the source"
                )
            yield row
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except csv.Error as error:
        raise SourceError(f"{path}: cannot read it as CSV: {error}") from None
    except (OSError, ValueError) as error:
        if isinstance(error, SourceError):
            raise
        raise SourceError(f"{path}: cannot read it as {fmt}: {error}") from None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _jsonl(path: Path, limits: SourceLimits) -> Iterator[RawRow]:
    with open(path, encoding="utf-8", errors="strict") as handle:
        number = 0
        for line in handle:
            if not line.strip():
                continue  # blank lines are not rows
            number += 1
            if len(line) > limits.max_row_bytes:  # never parsed: parsing is what blows up
                yield RawRow(number, error=limits.row_too_large(len(line.encode())))
                continue
            try:
                yield RawRow(number, json.loads(line))
            except json.JSONDecodeError as error:
                yield RawRow(number, error=f"not valid JSON ({error.msg} at column {error.colno})")


def _csv(path: Path, limits: SourceLimits) -> Iterator[RawRow]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        number = 0
        while True:
            number += 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over the csv module's 128 KiB limit
                raise SourceError(
                    f"{path}: row {number}: {error}; the source cannot be read past it"
                ) from None
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


def _parquet(path: Path, limits: SourceLimits) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    if meta.num_rows > limits.max_rows:
        raise SourceError(
            f"{path}: {meta.num_rows:,} rows, over the limit of {limits.max_rows:,} "
            "(TUNELINE_CURATION_MAX_ROWS); split the source"
        )
    expanded = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    on_disk = max(path.stat().st_size, 1)
    if expanded > limits.max_expansion * on_disk and expanded > limits.max_row_bytes:
        raise SourceError(
            f"{path}: {on_disk:,} bytes on disk expand to {expanded:,} bytes of rows, more than "
            f"{limits.max_expansion:g}× (TUNELINE_CURATION_MAX_EXPANSION): refused as a decompression bomb"
        )
    number = decoded = 0
    budget = max(limits.max_expansion * on_disk, limits.max_row_bytes)
    for batch in parquet.iter_batches(batch_size=256):
        for record in batch.to_pylist():  # dictionary-encoded columns expand only here
            number += 1
            size = len(json.dumps(record, default=str))
            decoded += size
            if decoded > budget:
                raise SourceError(
                    f"{path}: {on_disk:,} bytes on disk expand past {budget:,.0f} bytes of rows by row "
                    f"{number}, more than {limits.max_expansion:g}× (TUNELINE_CURATION_MAX_EXPANSION): "
                    "refused as a decompression bomb"
                )
            yield (
                RawRow(number, error=limits.row_too_large(size))
                if size > limits.max_row_bytes
                else RawRow(number, record)
            )


def _hf_dataset(path: Path, limits: SourceLimits) -> Iterator[RawRow]:
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
