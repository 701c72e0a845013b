from __future__ import annotations

from pathlib import Path

import pytest

from tests.ingestion.samples import SHARED_DATA


@pytest.fixture
def shared_docs() -> Path:
    """The real sample documents in ../shared/data/docs; skips when the folder is not there."""
    docs = SHARED_DATA / "docs"
    if not docs.is_dir():
        pytest.skip(f"../shared/data is missing (looked for {docs}); real-document tests skipped")
    return docs
