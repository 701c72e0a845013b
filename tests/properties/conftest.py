"""Property tests run on PostgreSQL (the production database); hypothesis drives many examples
through one stack, so the per-example cost must stay small."""

from __future__ import annotations

import pytest


@pytest.fixture
def db_backend() -> str:
    """Overrides the sqlite/postgres parametrisation of tests/conftest.py."""
    return "postgres"
