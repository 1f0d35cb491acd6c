"""Fixtures the unit tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.ml.models import load_tokenizer, tokenizer_sha256
from services.curation.pipeline import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Tokenizer:
    return Tokenizer.from_hf("tiny-llama", tokenizer_sha256(tiny_model), load_tokenizer(tiny_model))
