"""The embedder interface, its error, and the helpers every provider shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from parley.errors import ParleyError


@runtime_checkable
class Embedder(Protocol):
    """Turns text into unit-length float32 vectors; cosine similarity is then a dot product.

    `model_id` is recorded with each tenant's index: vectors from two different
    model_ids must never be compared, so a change of model means a reindex.
    """

    model_id: str
    dimension: int

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dimension), L2-normalised rows, in input order."""
        ...

    async def embed_query(self, text: str) -> np.ndarray:
        """float32 (dimension,), L2-normalised."""
        ...

    async def aclose(self) -> None: ...


class EmbeddingError(ParleyError):
    """Embedding failed. `retryable` says whether the same call may succeed later
    (rate limit, timeout, 5xx, connection) or will fail again (bad request, auth, bad config)."""

    code = "embedding_failed"

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def check_texts(texts: Sequence[str]) -> None:
    """Reject the classic mistake of passing one str (it would embed each character)."""
    if isinstance(texts, str):
        raise TypeError("expected a sequence of strings, got one str (wrap it in a list)")
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"expected str, got {type(t).__name__}")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (an all-zero row stays zero instead of becoming NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))
