"""Process wiring shared by every entry point: the broker and the embedder built from settings."""

from __future__ import annotations

import os

from parley.bus import RabbitBroker, Topology
from parley.embeddings import Embedder, create_embedder
from parley.settings import Settings


def topology(settings: Settings) -> Topology:
    return Topology(prefix=settings.amqp_prefix)


def rabbit_broker(settings: Settings, process: str) -> RabbitBroker:
    """A robust connection named after the process (`rabbitmqctl list_connections` shows who is who)."""
    return RabbitBroker(settings.amqp_url, topology=topology(settings), connection_name=f"parley-{process}-{os.getpid()}")


def embedder(settings: Settings, *, query_cache_size: int = 0) -> Embedder:
    """The configured embedder. Loading the local model blocks ~1 s: call it off the event loop."""
    return create_embedder(
        provider=settings.embedding_provider,
        model=settings.embedding_model,
        threads=settings.embedding_threads,
        openai_api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
        openai_base_url=settings.openai_base_url,
        openai_model=settings.openai_embedding_model,
        openai_dimensions=settings.openai_embedding_dimensions,
        batch_size=settings.embedding_batch_size,
        query_cache_size=query_cache_size,
    )
