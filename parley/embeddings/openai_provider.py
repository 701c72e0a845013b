"""Embeddings from OpenAI's `POST /v1/embeddings` (or any OpenAI-compatible server).

What the API allows and how we stay inside it:

* at most 2,048 inputs per request, at most 300,000 tokens summed over a request,
  at most 8,192 tokens per input, and no empty strings.
* We cannot count tokens exactly offline (tiktoken downloads its BPE files at run
  time, which this platform cannot do), so we *over*-estimate: one token per 3 UTF-8
  bytes. English averages ~4.2 bytes per token, so the estimate is ~40% high there and
  about right for CJK. Inputs longer than the per-input budget are cut at a UTF-8
  character boundary (and logged); requests are cut greedily, in order, so that neither
  the input count nor the estimated token sum is exceeded.
* Empty or whitespace-only texts are sent as a single space, so every input still gets
  a vector and the output keeps one row per input.
* We ask for `encoding_format="float"` explicitly: the SDK would otherwise request
  base64, which some OpenAI-compatible servers do not implement.
* `dimensions` is sent only when configured (text-embedding-3 models shorten their
  vectors server-side). Rows are sorted by the response's `index`, checked for count and
  width, and L2-normalised (OpenAI's are already, others' may not be).
* Retries: the SDK retries 408/409/429/5xx, connection errors and timeouts with
  exponential backoff and honours `Retry-After`/`retry-after-ms`; `max_retries` bounds
  it. What is left is raised as `EmbeddingError` with `retryable` set, so the job
  consumer can choose between its delay queue and the dead-letter queue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import openai

from parley.embeddings.base import EmbeddingError, check_texts, l2_normalise
from parley.errors import ConfigurationError

log = logging.getLogger(__name__)

#: Native widths of OpenAI's embedding models (used when no `dimensions` is configured).
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
MAX_BATCH_INPUTS = 2048
MAX_BATCH_TOKENS = 300_000
MAX_INPUT_TOKENS = 8192
BYTES_PER_TOKEN = 3  # conservative: see the module docstring


def estimate_tokens(text: str) -> int:
    """An over-estimate of the model's token count for `text` (at least 1)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN))


def prepare_input(text: str, max_tokens: int = MAX_INPUT_TOKENS) -> str:
    """The text as sent: never empty, at most `max_tokens` estimated tokens."""
    if not text.strip():
        return " "
    raw = text.encode("utf-8")
    limit = (max_tokens - 1) * BYTES_PER_TOKEN  # -1 leaves room for rounding up
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def plan_batches(texts: Sequence[str], max_inputs: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut `texts` into consecutive (start, stop) ranges within both request limits."""
    batches: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for i, text in enumerate(texts):
        n = estimate_tokens(text)
        if i > start and (i - start >= max_inputs or tokens + n > max_tokens):
            batches.append((start, i))
            start, tokens = i, 0
        tokens += n
    if start < len(texts):
        batches.append((start, len(texts)))
    return batches


class OpenAIEmbedder:
    """`Embedder` over the OpenAI embeddings API. Requests within one call run one at a time."""

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_batch_inputs: int = MAX_BATCH_INPUTS,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        max_input_tokens: int = MAX_INPUT_TOKENS,
    ) -> None:
        if not api_key:
            if not base_url:
                raise ConfigurationError("the openai embedding provider needs OPENAI_API_KEY (or OPENAI_BASE_URL)")
            api_key = "unused"  # OpenAI-compatible servers often need no key; the SDK insists on one
        if dimensions is not None and dimensions < 1:
            raise ConfigurationError("PARLEY_OPENAI_EMBEDDING_DIMENSIONS must be a positive integer")
        width = dimensions or KNOWN_DIMENSIONS.get(model)
        if width is None:
            raise ConfigurationError(
                f"unknown width for embedding model {model!r}: set PARLEY_OPENAI_EMBEDDING_DIMENSIONS"
            )
        self.model = model
        self.dimension = width
        self.model_id = f"openai:{model}@{width}"
        self._dimensions = dimensions
        self._limits = (min(max_batch_inputs, MAX_BATCH_INPUTS), max_batch_tokens, max_input_tokens)
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        check_texts(texts)
        max_inputs, max_tokens, max_input_tokens = self._limits
        inputs = [prepare_input(t, max_input_tokens) for t in texts]
        cut = sum(1 for a, b in zip(texts, inputs) if a.strip() and a != b)
        if cut:
            log.warning("truncated %d of %d texts to ~%d tokens for %s", cut, len(texts), max_input_tokens, self.model)
        out = np.empty((len(inputs), self.dimension), dtype=np.float32)
        for start, stop in plan_batches(inputs, max_inputs, max_tokens):
            out[start:stop] = await self._request(inputs[start:stop])
        return out

    async def embed_query(self, text: str) -> np.ndarray:
        return (await self.embed_documents([text]))[0]

    async def _request(self, batch: list[str]) -> np.ndarray:
        extra = {"dimensions": self._dimensions} if self._dimensions else {}
        try:
            resp = await self._client.embeddings.create(
                model=self.model, input=batch, encoding_format="float", **extra
            )
        except openai.APIStatusError as exc:
            retryable = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            raise EmbeddingError(
                f"embeddings request failed with HTTP {exc.status_code}: {exc.message}", retryable=retryable
            ) from exc
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise EmbeddingError(f"embeddings request failed: {exc}", retryable=True) from exc
        rows = sorted(resp.data, key=lambda d: d.index)
        if [r.index for r in rows] != list(range(len(batch))):
            raise EmbeddingError(
                f"embeddings response has indexes {[r.index for r in rows][:10]}... for {len(batch)} inputs",
                retryable=True,
            )
        vectors = np.asarray([r.embedding for r in rows], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise EmbeddingError(
                f"{self.model} returned vectors of shape {vectors.shape}, expected width {self.dimension}",
                retryable=False,
            )
        return l2_normalise(vectors)

    async def aclose(self) -> None:
        await self._client.close()
