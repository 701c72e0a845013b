"""Shared helpers of the vector index tests (this module holds no tests).

Items are synthetic: random unit vectors from a seeded generator and short texts, so a test can
make the nearest vector or the rarest word whatever it needs; no embedding model is involved.

Databases come from the shared ``db_url`` fixture of ``tests/conftest.py`` (real SQLite and
PostgreSQL, migrated by alembic).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from parley.settings import Settings
from parley.vectors import IndexItem

DIM = 32


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def random_unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    return unit(rng.standard_normal(dim))


def item_id(tenant_id: str, document_id: str, ordinal: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"parley:{tenant_id}:{document_id}:{ordinal}"))


def make_items(
    tenant_id: str, document_id: str, n: int, *, seed: int = 0, words: str = "", dim: int = DIM,
    kind: str = "document", version: str = "",
) -> list[IndexItem]:
    """``n`` chunks of one document with deterministic ids (per version), vectors and texts."""
    rng = np.random.default_rng(seed)
    return [
        IndexItem(
            id=item_id(tenant_id, document_id + version, ordinal),
            document_id=document_id,
            text=f"Section {ordinal} of {document_id} explains shipping and returns. {words}".strip(),
            vector=random_unit(rng, dim),
            kind=kind,  # type: ignore[arg-type]
            title=f"{document_id}.pdf",
            heading_path=["Guide", f"Part {ordinal}"],
            metadata={"url": f"https://example.test/{document_id}#{ordinal}", "ordinal": ordinal},
        )
        for ordinal in range(n)
    ]


def new_tenant() -> str:
    return "t" + uuid.uuid4().hex[:16]


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=url, data_dir=tmp_path / "var", log_json=False)
