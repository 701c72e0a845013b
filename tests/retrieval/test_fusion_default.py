"""The default fusion (issue 15): convex, over each leg's min-max normalised scores, so the size of a
lead counts, not only the order (measured better than RRF on SciFact, bench/RESULTS.md)."""

from __future__ import annotations

import pytest

from parley.settings import Settings
from parley.vectors import Hit
from retrieval.config import FusionConfig, RetrievalConfig
from retrieval.fusion import fuse


def _hit(id_: str, score: float) -> Hit:
    return Hit(id_, f"doc-{id_}", "document", "", "text", [], {}, score)


def test_the_default_fusion_weighs_how_far_ahead_a_hit_is() -> None:
    # Given a chunk far ahead in the vector leg and a hair behind in the keyword leg, and one the other way round
    vector = [_hit("far", 0.90), _hit("near", 0.30), _hit("last", 0.10)]
    keyword = [_hit("near", 10.0), _hit("far", 9.9), _hit("last", 1.0)]
    # When both are fused with the defaults (of the settings and of the config alike)
    config = RetrievalConfig.from_settings(Settings()).fusion
    assert config == RetrievalConfig().fusion == FusionConfig()
    fused = fuse(vector, keyword, config)
    # Then the chunk with the large lead wins, with the normalised blend as its score
    assert [f.hit.id for f in fused] == ["far", "near", "last"]
    assert fused[0].score == pytest.approx(1.0 + 8.9 / 9.0)
    # while reciprocal-rank fusion, which sees only the order, cannot tell them apart but by the tie-break
    rrf = fuse(vector, keyword, FusionConfig(method="rrf"))
    assert rrf[0].score == pytest.approx(rrf[1].score)
