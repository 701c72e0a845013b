"""A small LRU cache of query embeddings, as a wrapper around any embedder.

Customers ask the same few questions over and over ("do you ship to Canada?"); a
cache hit skips the one expensive step of a retrieval (the query embedding is >85% of
a cache-miss retrieval's time with a local model, and a network round trip with OpenAI).

* Keyed by the exact query text. Callers normalise questions (the answer cache keys on
  the normalised question) before they get here; we do not guess.
* Not tenant-scoped on purpose: an embedding is a pure function of (model, text), so
  sharing it leaks nothing but the time it saves, and model_id is fixed per instance.
* Vectors are returned read-only, so a caller cannot corrupt the cached copy in place.
* Documents pass straight through: they are embedded once, in workers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np


class CachedQueryEmbedder:
    """Wraps an embedder; `embed_query` is served from an LRU of at most `maxsize` vectors."""

    def __init__(self, inner: Any, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1 (do not wrap at all to disable the cache)")
        self.inner = inner
        self.maxsize = maxsize
        self.model_id: str = inner.model_id
        self.dimension: int = inner.dimension
        self.hits = 0
        self.misses = 0
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()

    async def embed_query(self, text: str) -> np.ndarray:
        vec = self._lru.get(text)
        if vec is not None:
            self._lru.move_to_end(text)
            self.hits += 1
            return vec
        self.misses += 1
        vec = await self.inner.embed_query(text)
        vec.setflags(write=False)
        self._lru[text] = vec
        if len(self._lru) > self.maxsize:
            self._lru.popitem(last=False)
        return vec

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return await self.inner.embed_documents(texts)

    def embed_documents_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Only for local embedders (worker processes); raises AttributeError otherwise."""
        return self.inner.embed_documents_sync(texts)

    def unknown_share(self, text: str) -> float:
        """The inner model's share of unknown word pieces (`LocalEmbedder.unknown_share`); 0.0 for
        a model that cannot say (a remote API)."""
        share = getattr(self.inner, "unknown_share", None)
        return float(share(text)) if share is not None else 0.0

    def __len__(self) -> int:
        return len(self._lru)

    def clear(self) -> None:
        self._lru.clear()

    async def aclose(self) -> None:
        self._lru.clear()
        await self.inner.aclose()
