"""The gateway's resources, built once at start-up and handed to every route through one typed key.

Routes are registered when the app is created; the resources exist only while it runs (opened
and closed in ``cleanup_ctx``), so handlers read ``request.app[GATEWAY]`` at request time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.routing import InstallationDirectory
from bot.config import GatewayConfig
from bot.answering import AnswerLoop
from bot.conversation.handoff import Handoffs
from bot.conversation.repository import InboundWriter
from bot.conversation.schemas import Channel
from bot.conversation.uploads import UploadIntake
from bot.limits import GatewayLimits
from bot.metrics import GatewayMetrics
from bot.signing import Signer
from parley.blobs import BlobStore
from parley.crypto import SecretBox
from parley.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    config: GatewayConfig
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    signer: Signer
    metrics: GatewayMetrics
    directory: InstallationDirectory
    blobs: BlobStore
    intake: UploadIntake
    #: Stores inbound messages (before the ack), on connections of its own.
    writer: InboundWriter
    #: Answering: `submit` from a webhook, `run` from the web chat (see `bot.answering`).
    answers: AnswerLoop
    #: Questions per sender and tenant, the answer backlog, failed sign-ins (see `bot.limits`).
    limits: GatewayLimits
    http: aiohttp.ClientSession
    channels: dict[str, Channel] = field(default_factory=dict)
    broker: Any = None
    clock: Callable[[], float] = time.time
    #: name -> async () -> None raising when the dependency is not ready (for /readyz)
    checks: dict[str, Callable[[], Any]] = field(default_factory=dict)
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    #: The bus consumers this gateway runs (the notifications consumer), once started.
    consumers: list[Any] = field(default_factory=list)
    #: Set once the broker is connected, its topology declared and the consumers started.
    bus_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Handoff to a person (`bot.conversation.handoff`): staff replies, actions, the sweep.
    handoffs: Handoffs | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a small follow-up (a statistic) after the response; awaited at shutdown."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


GATEWAY = web.AppKey("parley_gateway", Gateway)
METRICS = web.AppKey("parley_gateway_metrics", GatewayMetrics)
