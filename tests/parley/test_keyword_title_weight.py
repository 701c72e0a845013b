"""The title's weight in the embedded index's BM25 leg (``PARLEY_KEYWORD_TITLE_WEIGHT``).

Every chunk of a document repeats the document's title in a short field, which BM25 at full weight
over-rewards (measured on SciFact, bench/RESULTS.md); the weight scales the title field's part of a
chunk's score and leaves the text's part alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from parley.db import create_engine, create_sessionmaker
from parley.errors import ConfigurationError
from parley.vectors import EmbeddedVectorIndex, IndexItem, create_vector_index
from tests.parley.test_vectors_support import new_tenant, random_unit, settings_for


@pytest.fixture
async def sessions(db_url: str, tmp_path: Path) -> AsyncIterator[object]:
    engine = create_engine(settings_for(db_url, tmp_path), "test-title-weight")
    yield create_sessionmaker(engine)
    await engine.dispose()


def _items() -> list[IndexItem]:
    rng = np.random.default_rng(3)
    return [
        # the question's word only in the title
        IndexItem(id="00000000-0000-5000-8000-000000000001", document_id="in-title", title="Warranty terms",
                  text="Our policy covers repairs of every boot we sell, for life.", vector=random_unit(rng)),
        # the question's word only in the text
        IndexItem(id="00000000-0000-5000-8000-000000000002", document_id="in-text", title="General notes",
                  text="The warranty covers repairs of seams and soles for two years.", vector=random_unit(rng)),
        IndexItem(id="00000000-0000-5000-8000-000000000003", document_id="unrelated", title="Shipping",
                  text="We ship to Canada and Mexico within a week.", vector=random_unit(rng)),
    ]


async def _scores(sessions: object, tmp_path: Path, weight: float) -> dict[str, float]:
    tenant = new_tenant()
    index = EmbeddedVectorIndex(sessions, role="reader", data_dir=None, refresh_interval=0, title_weight=weight)  # type: ignore[arg-type]
    try:
        await index.upsert(tenant, _items())
        hits = await index.keyword_search(tenant, "How long is the warranty?", 10)
    finally:
        await index.aclose()
    return {h.document_id: h.score for h in hits}


async def test_the_title_weight_scales_only_the_titles_part_of_the_score(sessions, tmp_path: Path) -> None:
    # Given one chunk matching the question in its title and one in its text
    # When the keyword leg runs at full title weight, at 0.3 and at 0
    full, light, none = [await _scores(sessions, tmp_path, w) for w in (1.0, 0.3, 0.0)]
    # Then at full weight both match
    assert full["in-title"] > 0 and full["in-text"] > 0
    # and at 0.3 the title's match counts 0.3 as much, the text's match is untouched, so the text wins
    assert light["in-title"] == pytest.approx(0.3 * full["in-title"], rel=1e-4)
    assert light["in-text"] == pytest.approx(full["in-text"], rel=1e-4)
    assert list(light)[0] == "in-text"
    # and at 0 a match in the title alone scores nothing
    assert none.get("in-title", 0.0) == pytest.approx(0.0) and none["in-text"] == pytest.approx(full["in-text"], rel=1e-4)
    assert "unrelated" not in full


async def test_the_factory_takes_the_weight_from_the_settings(sessions, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    default = create_vector_index(settings, role="reader", sessions=sessions)  # type: ignore[arg-type]
    custom = create_vector_index(settings.model_copy(update={"keyword_title_weight": 1.0}), role="reader", sessions=sessions)  # type: ignore[arg-type]
    try:
        assert default.title_weight == settings.keyword_title_weight == 0.3  # type: ignore[attr-defined]
        assert custom.title_weight == 1.0  # type: ignore[attr-defined]
    finally:
        await default.aclose()
        await custom.aclose()
    with pytest.raises(ConfigurationError):
        EmbeddedVectorIndex(sessions, role="reader", title_weight=-1.0)  # type: ignore[arg-type]
