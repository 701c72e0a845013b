"""Embeddings: the real local model (no mocks) and the OpenAI provider against a local
aiohttp server that speaks `POST /v1/embeddings` as OpenAI does. No timed assertions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import math
from collections.abc import AsyncIterator, Iterator

import numpy as np
import openai
import pytest
from aiohttp import web

from parley.embeddings import CachedQueryEmbedder, Embedder, EmbeddingError, create_embedder
from parley.embeddings.local import DEFAULT_MODEL, MODELS, LocalEmbedder, model_installed
from parley.embeddings.openai_provider import (
    OpenAIEmbedder,
    estimate_tokens,
    plan_batches,
    prepare_input,
)
from parley.errors import ConfigurationError

# --------------------------------------------------------------------------- local model


def _why_not(name: str) -> str | None:
    for module in ("onnxruntime", "tokenizers") + (("onnx",) if MODELS[name].onnx_file is None else ()):
        if importlib.util.find_spec(module) is None:
            return f"python package {module!r} is not installed (see pyproject.toml)"
    if not model_installed(name):
        return f"model {name!r} is not installed: {MODELS[name].install}"
    return None


needs_default_model = pytest.mark.skipif(
    _why_not(DEFAULT_MODEL) is not None, reason=str(_why_not(DEFAULT_MODEL))
)


@pytest.fixture(scope="module")
def embedder() -> Iterator[LocalEmbedder]:
    """The default model with small batches, so batching code paths run on few texts."""
    reason = _why_not(DEFAULT_MODEL)
    if reason:
        pytest.skip(reason)
    emb = LocalEmbedder(DEFAULT_MODEL, threads=1, batch_size=4)
    yield emb
    emb.close()


TEXTS = [
    "Do you ship to Canada?",
    "How long does delivery to Toronto take?",
    "Our store sells handmade ceramic mugs and bowls.",
    "",
    "Returns are accepted within 30 days of purchase if the item is unused and in its original box. "
    "Refunds go back to the original payment method within five business days.",
    "x",
    "The quarterly report is due on Friday.",
    "Mugs are dishwasher safe but not microwave safe.",
    "¿Hacen envíos a México? 日本への発送は可能ですか？",
    "Order #1234 has not arrived yet, can you check the tracking number?",
]


@needs_default_model
async def test_shape_dtype_and_unit_norm(embedder: LocalEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dimension == 384 and embedder.model_id == "local:all-MiniLM-L6-v2-onnx"
    docs = await embedder.embed_documents(TEXTS)
    assert docs.shape == (len(TEXTS), 384) and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    query = await embedder.embed_query("do you ship abroad?")
    assert query.shape == (384,) and query.dtype == np.float32
    assert abs(float(np.linalg.norm(query)) - 1.0) < 1e-5
    empty = await embedder.embed_documents([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


@needs_default_model
async def test_deterministic(embedder: LocalEmbedder) -> None:
    a = await embedder.embed_documents(TEXTS)
    b = await embedder.embed_documents(TEXTS)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, embedder.embed_documents_sync(TEXTS))


@needs_default_model
async def test_paraphrase_is_closer_than_unrelated(embedder: LocalEmbedder) -> None:
    q = await embedder.embed_query("Can I send back an item I bought and get my money back?")
    paraphrase, unrelated = await embedder.embed_documents(
        ["What is your refund and return policy?", "The quarterly report is due on Friday."]
    )
    assert float(q @ paraphrase) > float(q @ unrelated) + 0.2
    a, b, c = await embedder.embed_documents(
        ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    )
    assert float(a @ b) > float(a @ c)


@needs_default_model
async def test_batch_equals_single_and_keeps_input_order(embedder: LocalEmbedder) -> None:
    # batch_size=4 and mixed lengths: texts are sorted by length into 3 batches internally.
    batched = await embedder.embed_documents(TEXTS)
    for i, text in enumerate(TEXTS):
        single = await embedder.embed_query(text)
        np.testing.assert_allclose(batched[i], single, atol=1e-5, err_msg=f"text {i}")


@needs_default_model
def test_truncates_to_256_word_pieces(embedder: LocalEmbedder) -> None:
    long_a = "shipping " * 300 + "alpha beta gamma"
    long_b = "shipping " * 300 + "completely different ending about whales"
    ids = embedder.tokenize([long_a, "hello"])
    assert len(ids[0]) == 256 and ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] ... [SEP]
    assert ids[1] == [101, 7592, 102]
    a, b = embedder.embed_documents_sync([long_a, long_b])
    np.testing.assert_array_equal(a, b)  # the endings lie past the limit


@needs_default_model
async def test_event_loop_keeps_running_during_inference(embedder: LocalEmbedder) -> None:
    # Four ~250-word texts make one batch: one executor job of many milliseconds. If it ran
    # on the loop, the ticker could tick at most once or twice while it runs.
    texts = [" ".join(f"word{i}{j} customer order delivery" for j in range(50)) for i in range(4)]
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    vectors = await embedder.embed_documents(texts)
    during = ticks - before
    running = False
    await task
    assert vectors.shape == (4, 384)
    assert during >= 10, f"the ticker ran only {during} times while embedding"


@needs_default_model
def test_rejects_a_bare_string(embedder: LocalEmbedder) -> None:
    with pytest.raises(TypeError, match="one str"):
        embedder.embed_documents_sync("not a list")  # type: ignore[arg-type]


@needs_default_model
def test_fp32_graph_agrees_with_an_independent_export(embedder: LocalEmbedder) -> None:
    """Our in-memory ONNX graph vs the int8 model exported from PyTorch by someone else."""
    reason = _why_not("all-MiniLM-L6-v2-int8")
    if reason:
        pytest.skip(reason)
    other = LocalEmbedder("all-MiniLM-L6-v2-int8")
    try:
        ours, theirs = embedder.embed_documents_sync(TEXTS), other.embed_documents_sync(TEXTS)
    finally:
        other.close()
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() > 0.995, cosines  # int8 weights cost ~0.0005; a graph bug costs far more


@pytest.mark.parametrize("name", sorted(MODELS))
async def test_every_installed_model_loads_and_makes_sense(name: str) -> None:
    reason = _why_not(name)
    if reason:
        pytest.skip(reason)
    emb = LocalEmbedder(name)
    try:
        q, para, other = await emb.embed_documents(
            ["Do you ship to Canada?", "Can you deliver my order to Canada?", "I love ceramic mugs."]
        )
        assert q.shape == (emb.dimension,)
        np.testing.assert_allclose(np.linalg.norm([q, para, other], axis=1), 1.0, atol=1e-5)
        assert float(q @ para) > float(q @ other)
        assert len(emb.tokenize(["word " * 1000])[0]) == emb.max_length
    finally:
        await emb.aclose()


@needs_default_model
async def test_closed_embedder_refuses_work() -> None:
    emb = LocalEmbedder(DEFAULT_MODEL)
    await emb.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await emb.embed_query("hello")


@needs_default_model
async def test_query_lru_through_the_factory() -> None:
    emb = create_embedder(
        provider="local", model=None, threads=1, openai_api_key=None, openai_base_url=None,
        openai_model="text-embedding-3-small", openai_dimensions=None, batch_size=8, query_cache_size=2,
    )
    assert isinstance(emb, CachedQueryEmbedder) and emb.model_id == "local:all-MiniLM-L6-v2-onnx"
    try:
        a = await emb.embed_query("alpha")
        assert (emb.hits, emb.misses) == (0, 1)
        assert await emb.embed_query("alpha") is a
        assert (emb.hits, emb.misses) == (1, 1)
        assert not a.flags.writeable
        await emb.embed_query("beta")
        await emb.embed_query("alpha")  # alpha becomes the most recent ...
        await emb.embed_query("gamma")  # ... so beta is evicted
        assert (emb.hits, emb.misses, len(emb)) == (2, 3, 2)
        await emb.embed_query("alpha")
        assert emb.hits == 3
        await emb.embed_query("beta")
        assert emb.misses == 4
        docs = emb.embed_documents_sync(["alpha"])
        np.testing.assert_allclose(docs[0], a, atol=1e-5)
    finally:
        await emb.aclose()


def test_factory_rejects_unknown_provider_and_model() -> None:
    common = dict(threads=1, openai_api_key=None, openai_base_url=None, openai_model="text-embedding-3-small",
                  openai_dimensions=None, batch_size=8)
    with pytest.raises(ConfigurationError, match="provider"):
        create_embedder(provider="cohere", model=None, **common)
    with pytest.raises(ConfigurationError, match="unknown local embedding model"):
        create_embedder(provider="local", model="no-such-model", **common)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        create_embedder(provider="openai", model=None, **common)


# --------------------------------------------------------------------------- OpenAI provider

NATIVE = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}


def fake_vector(text: str, width: int) -> np.ndarray:
    """What the fake server returns for a text: deterministic, deliberately not unit length."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=width).astype(np.float32) * 3.0


def expected(text: str, width: int) -> np.ndarray:
    v = fake_vector(text, width)
    return v / np.linalg.norm(v)


class FakeOpenAI:
    """`POST /v1/embeddings` as OpenAI implements it, with scripted failures.

    `script` holds one behaviour per coming request: "ok", "429", "500", "400", "hang".
    It enforces the real limits (2,048 inputs, no empty strings, 8,192 tokens per input,
    300,000 per request) with a token count that, like the real tokenizer on English,
    is lower than the client's estimate.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.script: list[str] = []
        self.release = asyncio.Event()
        self.base_url = ""

    @staticmethod
    def tokens(text: str) -> int:
        return math.ceil(len(text.encode()) / 4)

    @staticmethod
    def error(status: int, message: str, type_: str, code: str | None, headers: dict | None = None) -> web.Response:
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization"))
        mode = self.script.pop(0) if self.script else "ok"
        if mode == "429":
            return self.error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded",
                              {"Retry-After": "1", "retry-after-ms": "20"})
        if mode == "500":
            return self.error(500, "The server had an error while processing your request.", "server_error", None)
        if mode == "400":
            return self.error(400, "This model does not support specifying dimensions.",
                              "invalid_request_error", None)
        if mode == "hang":
            await asyncio.wait_for(self.release.wait(), 30)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not inputs or len(inputs) > 2048:
            return self.error(400, "'$.input' must have at most 2048 items", "invalid_request_error", None)
        if any(t == "" for t in inputs):
            return self.error(400, "'$.input' is invalid.", "invalid_request_error", None)
        if any(self.tokens(t) > 8192 for t in inputs):
            return self.error(400, "This model's maximum context length is 8192 tokens",
                              "invalid_request_error", None)
        total = sum(self.tokens(t) for t in inputs)
        if total > 300_000:
            return self.error(400, "Requested 300001 tokens, max 300000 tokens per request",
                              "invalid_request_error", "max_tokens_per_request")
        width = body.get("dimensions") or NATIVE[body["model"]]
        data = []
        for i, text in enumerate(inputs):
            vec = fake_vector(text, width)
            if body.get("encoding_format") == "base64":
                emb: object = base64.b64encode(vec.astype("<f4").tobytes()).decode()
            else:
                emb = [float(x) for x in vec]
            data.append({"object": "embedding", "index": i, "embedding": emb})
        data.reverse()  # the API does not promise order; clients must sort by index
        return web.json_response({
            "object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": total, "total_tokens": total},
        })


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/embeddings", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.base_url = f"http://{host}:{port}/v1"
    yield fake
    fake.release.set()
    await runner.cleanup()


def client(fake: FakeOpenAI, **kwargs: object) -> OpenAIEmbedder:
    options: dict = {"api_key": "sk-test", "base_url": fake.base_url, "max_retries": 2, "timeout": 10.0}
    options.update(kwargs)
    return OpenAIEmbedder(**options)


async def test_openai_vectors_order_and_request_shape(fake_openai: FakeOpenAI) -> None:
    emb = client(fake_openai)
    texts = ["first", "", "   ", "third text", "fourth"]
    try:
        vectors = await emb.embed_documents(texts)
    finally:
        await emb.aclose()
    assert isinstance(emb, Embedder)
    assert emb.model_id == "openai:text-embedding-3-small@1536" and emb.dimension == 1536
    assert vectors.shape == (5, 1536) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    (request,) = fake_openai.requests
    assert request["input"] == ["first", " ", " ", "third text", "fourth"]  # no empty strings sent
    assert request["model"] == "text-embedding-3-small"
    assert request["encoding_format"] == "float"
    assert "dimensions" not in request
    assert fake_openai.auth == ["Bearer sk-test"]
    for row, text in zip(vectors, request["input"]):  # the server reversed `data`; we sorted by index
        np.testing.assert_allclose(row, expected(text, 1536), atol=1e-6)


async def test_openai_dimensions_are_requested_and_recorded(fake_openai: FakeOpenAI) -> None:
    emb = client(fake_openai, dimensions=256)
    try:
        q = await emb.embed_query("hello")
    finally:
        await emb.aclose()
    assert emb.model_id == "openai:text-embedding-3-small@256"
    assert q.shape == (256,)
    assert fake_openai.requests[0]["dimensions"] == 256
    np.testing.assert_allclose(q, expected("hello", 256), atol=1e-6)


async def test_openai_batches_by_input_count(fake_openai: FakeOpenAI) -> None:
    emb = client(fake_openai, dimensions=4)
    texts = [f"text {i}" for i in range(5000)]
    try:
        vectors = await emb.embed_documents(texts)
    finally:
        await emb.aclose()
    assert [len(r["input"]) for r in fake_openai.requests] == [2048, 2048, 904]
    np.testing.assert_allclose(vectors[4999], expected("text 4999", 4), atol=1e-6)


async def test_openai_batches_by_tokens_and_truncates_long_inputs(fake_openai: FakeOpenAI) -> None:
    emb = client(fake_openai, dimensions=4)
    texts = [f"{i:03d} " + "lorem ipsum " * 2500 for i in range(100)]  # ~30 KB each, over 8,192 tokens
    try:
        vectors = await emb.embed_documents(texts)
    finally:
        await emb.aclose()
    sizes = [len(r["input"]) for r in fake_openai.requests]
    assert sum(sizes) == 100 and len(sizes) == 3, sizes  # 36 + 36 + 28: 300k / ~8.2k tokens each
    for request in fake_openai.requests:
        assert sum(estimate_tokens(t) for t in request["input"]) <= 300_000
        assert all(estimate_tokens(t) <= 8192 for t in request["input"])
    assert vectors.shape == (100, 4)


async def test_openai_429_with_retry_after_then_success(fake_openai: FakeOpenAI) -> None:
    fake_openai.script = ["429"]
    emb = client(fake_openai)
    try:
        q = await emb.embed_query("retry me")
    finally:
        await emb.aclose()
    assert len(fake_openai.requests) == 2
    np.testing.assert_allclose(q, expected("retry me", 1536), atol=1e-6)


async def test_openai_500_is_retried_then_raised_as_retryable(fake_openai: FakeOpenAI) -> None:
    fake_openai.script = ["500"] * 5
    emb = client(fake_openai, max_retries=1)
    try:
        with pytest.raises(EmbeddingError) as info:
            await emb.embed_documents(["a", "b"])
    finally:
        await emb.aclose()
    assert info.value.retryable is True
    assert isinstance(info.value.__cause__, openai.InternalServerError)
    assert len(fake_openai.requests) == 2  # first try + one retry


async def test_openai_timeout_is_raised_as_retryable(fake_openai: FakeOpenAI) -> None:
    fake_openai.script = ["hang", "hang"]
    emb = client(fake_openai, max_retries=1, timeout=0.3)
    try:
        with pytest.raises(EmbeddingError) as info:
            await emb.embed_query("slow")
    finally:
        await emb.aclose()
    assert info.value.retryable is True
    assert isinstance(info.value.__cause__, openai.APITimeoutError)
    assert len(fake_openai.requests) == 2


async def test_openai_bad_request_is_permanent(fake_openai: FakeOpenAI) -> None:
    fake_openai.script = ["400"]
    emb = client(fake_openai, dimensions=64)
    try:
        with pytest.raises(EmbeddingError, match="HTTP 400") as info:
            await emb.embed_query("x")
    finally:
        await emb.aclose()
    assert info.value.retryable is False
    assert len(fake_openai.requests) == 1


async def test_openai_query_cache_saves_requests(fake_openai: FakeOpenAI) -> None:
    emb = create_embedder(
        provider="openai", model=None, threads=1, openai_api_key="sk-test", openai_base_url=fake_openai.base_url,
        openai_model="text-embedding-3-large", openai_dimensions=None, batch_size=8, query_cache_size=16,
    )
    try:
        a = await emb.embed_query("same question")
        b = await emb.embed_query("same question")
    finally:
        await emb.aclose()
    assert a is b and a.shape == (3072,)
    assert len(fake_openai.requests) == 1


def test_openai_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="PARLEY_OPENAI_EMBEDDING_DIMENSIONS"):
        OpenAIEmbedder(api_key="k", model="my-local-model")
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAIEmbedder(api_key=None)
    # A compatible server without auth: no key needed, width from configuration.
    emb = OpenAIEmbedder(api_key=None, base_url="http://127.0.0.1:9/v1", model="nomic-embed-text", dimensions=768)
    assert emb.model_id == "openai:nomic-embed-text@768"


def test_prepare_input_and_plan_batches() -> None:
    assert prepare_input("") == " " and prepare_input(" \n") == " "
    assert prepare_input("short") == "short"
    cut = prepare_input("é" * 20_000, max_tokens=100)  # 2 bytes per char: cut on a char boundary
    assert cut == "é" * 148 and estimate_tokens(cut) <= 100
    assert plan_batches([], 10, 100) == []
    assert plan_batches(["a"] * 5, 2, 100) == [(0, 2), (2, 4), (4, 5)]
    texts = ["x" * 30] * 5  # 10 estimated tokens each
    assert plan_batches(texts, 100, 25) == [(0, 2), (2, 4), (4, 5)]
    assert plan_batches(["x" * 300], 100, 25) == [(0, 1)]  # one input over budget still goes alone
