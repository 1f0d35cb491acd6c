"""The file formats a dataset source may have, told from its name: shared by the CLI (which
uploads sources and names their format) and curation (which reads them)."""

from __future__ import annotations

import os
from pathlib import Path

SOURCE_FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".csv": "csv",
}


class UnknownFormat(ValueError):
    """The name does not say which format the file has."""


def infer_format(path: str | os.PathLike[str]) -> str:
    """`jsonl`, `parquet`, `csv`, or `hf-dataset` for a directory saved by `datasets`."""
    p = Path(path)
    if p.is_dir():
        return "hf-dataset"
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    if suffix.lower() not in SOURCE_FORMATS:
        raise UnknownFormat(
            f"{path}: cannot tell the format from the extension {suffix!r}; use .jsonl, .parquet, .csv "
            "or a directory saved with datasets' save_to_disk"
        )
    return SOURCE_FORMATS[suffix.lower()]
