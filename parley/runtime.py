"""Process wiring shared by every entry point: the broker and the embedder built from settings,
and the CPU priority of background workers."""

from __future__ import annotations

import contextlib
import os

from parley.bus import RabbitBroker, Topology
from parley.embeddings import Embedder, create_embedder
from parley.settings import Settings


def topology(settings: Settings) -> Topology:
    return Topology(prefix=settings.amqp_prefix, queue_type=settings.amqp_queue_type,
                    delivery_limit=settings.amqp_delivery_limit, fast_lane=settings.amqp_fast_lane)


def rabbit_broker(settings: Settings, process: str) -> RabbitBroker:
    """A robust connection named after the process (`rabbitmqctl list_connections` shows who is who)."""
    return RabbitBroker(settings.amqp_url, topology=topology(settings), connection_name=f"parley-{process}-{os.getpid()}")


def embedder(settings: Settings, *, query_cache_size: int = 0, answers: bool = False) -> Embedder:
    """The configured embedder. Loading the local model blocks ~1 s: call it off the event loop.
    ``answers``: this process embeds questions (the retrieval service), so it also builds the int8
    query session when ``embedding_query_int8`` is on; workers embed documents only."""
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
        query_int8=answers and settings.embedding_query_int8,
    )


def niceness_across_sessions() -> int:
    """Make this process's niceness count against other sessions too; returns the niceness.

    Linux with autogroups (``/proc/sys/kernel/sched_autogroup_enabled``, on by default in most
    kernels) first shares the CPU equally between *sessions* and applies nice only between the
    processes of one session. ``parley up`` starts every process in a session of its own, so a
    worker's nice 19 counted for nothing against the retrieval service: measured with
    bench/isolation.py, answer p99 rose ~10x while two workers indexed at "nice 19". A worker
    that leads its own session therefore gives its session's autogroup its own niceness (raising
    a niceness needs no privilege). A no-op at niceness 0 (tests that run a worker in-process),
    for a process that shares its session with others (a shell's foreground job), and where
    autogroups do not exist.
    """
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > 0 and os.getsid(0) == os.getpid():
        with contextlib.suppress(OSError):
            with open("/proc/self/autogroup", "w") as fh:
                fh.write(str(nice))
    return nice
