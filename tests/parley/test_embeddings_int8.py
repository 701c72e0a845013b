"""The int8 query session of the local model (``PARLEY_EMBEDDING_QUERY_INT8``): questions run on int8
linear layers built from the same weights, documents stay fp32. Real model, no mocks, no timings."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import onnx
import pytest

from parley import runtime
from parley.embeddings import create_embedder
from parley.embeddings.bert_onnx import build_bert_onnx, quantize_columns, read_safetensors
from parley.embeddings.local import _GT, _INSTALL_GT, DEFAULT_MODEL, LocalEmbedder, _package_file
from parley.settings import Settings
from tests.parley.test_embeddings import TEXTS, _why_not

pytestmark = pytest.mark.skipif(_why_not(DEFAULT_MODEL) is not None, reason=str(_why_not(DEFAULT_MODEL)))

QUESTIONS = ["Do you ship to Canada?", "How long is the warranty on boots?", "Can I return sale items for a refund?",
             "Which payment methods do you accept?", "Is the Summit Parka waterproof?"]
PASSAGES = ["We ship to Canada and Mexico; international delivery takes 7 to 14 business days.",
            "Every boot carries a two-year warranty against defects in seams and soles.",
            "Sale items are final and cannot be returned; other items can be returned within 30 days.",
            "We accept Visa, Mastercard, American Express and PayPal.",
            "The Summit Parka is an insulated, fully waterproof parka for winter mountaineering."]


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[LocalEmbedder, LocalEmbedder]]:
    fp32, int8 = LocalEmbedder(threads=1), LocalEmbedder(threads=1, query_int8=True)
    yield fp32, int8
    fp32.close()
    int8.close()


def test_columns_are_quantised_symmetrically_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 48)).astype(np.float32)
    weight[:, 5] = 0.0  # an all-zero column must not divide by zero
    q, scale = quantize_columns(weight)
    assert q.dtype == np.int8 and scale.shape == (48,) and int(np.abs(q).max()) <= 127
    assert np.all(np.abs(q.astype(np.float32) * scale - weight) <= scale / 2 + 1e-7)
    assert np.all(q[:, 5] == 0)


def test_the_int8_graph_quantises_every_linear_layer_and_nothing_else() -> None:
    weights_path = _package_file(_GT, "model/model.safetensors", _INSTALL_GT)
    config = json.loads((weights_path.parent / "config.json").read_text())
    blob, _ = build_bert_onnx(read_safetensors(weights_path), config, int8=True)
    ops = [n.op_type for n in onnx.load_from_string(blob).graph.node]
    layers = config["num_hidden_layers"]
    assert ops.count("DynamicQuantizeMatMul") == 6 * layers  # q, k, v, attention out, intermediate, out
    assert ops.count("MatMul") == 2 * layers  # only the attention products of activations stay fp32


def test_int8_questions_land_next_to_fp32_ones_and_find_the_same_passages(pair) -> None:
    fp32, int8 = pair
    assert int8.query_int8 and not fp32.query_int8
    q32 = np.stack([fp32.embed_query_sync(q) for q in QUESTIONS])
    q8 = np.stack([int8.embed_query_sync(q) for q in QUESTIONS])
    assert np.allclose(np.linalg.norm(q8, axis=1), 1.0, atol=1e-5)
    cosines = (q32 * q8).sum(axis=1)
    assert cosines.min() > 0.97  # measured ~0.99 on SciFact's claims
    assert not np.allclose(q32, q8)  # it is another session, not the fp32 one again
    # documents are embedded by the fp32 session either way, so indexes built before stay valid
    docs = fp32.embed_documents_sync(PASSAGES)
    assert np.array_equal(docs, int8.embed_documents_sync(PASSAGES))
    assert list((q8 @ docs.T).argmax(axis=1)) == list((q32 @ docs.T).argmax(axis=1)) == list(range(len(QUESTIONS)))


async def test_the_async_query_path_uses_the_int8_session(pair) -> None:
    fp32, int8 = pair
    for text in TEXTS[:3]:
        assert np.array_equal(await int8.embed_query(text), int8.embed_query_sync(text))
        assert not np.array_equal(await int8.embed_query(text), await fp32.embed_query(text))


def test_only_the_answering_process_builds_the_int8_session(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, log_json=False)
    assert settings.embedding_query_int8
    answering = runtime.embedder(settings, query_cache_size=4, answers=True)
    worker = runtime.embedder(settings)
    off = runtime.embedder(settings.model_copy(update={"embedding_query_int8": False}), query_cache_size=4, answers=True)
    try:
        assert answering.inner.query_int8  # type: ignore[attr-defined]
        assert not worker.query_int8 and not off.inner.query_int8  # type: ignore[attr-defined]
    finally:
        for e in (answering.inner, worker, off.inner):  # type: ignore[attr-defined]
            e.close()
    direct = create_embedder(provider="local", model=None, threads=1, openai_api_key=None, openai_base_url=None,
                             openai_model="unused", openai_dimensions=None, batch_size=8, query_cache_size=0, query_int8=True)
    try:
        assert direct.query_int8  # type: ignore[attr-defined]
    finally:
        direct.close()  # type: ignore[attr-defined]
