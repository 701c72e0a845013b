"""The one error-to-HTTP map (`parley.http_errors`): each error class's status and JSON shape, aiohttp's
own HTTP errors, unknown errors with a logged id, and proof that the gateway and the retrieval
service answer every error the same way."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from parley.bus.errors import Permanent, Retryable
from parley.errors import (
    AlreadyExists, ConfigurationError, Forbidden, InvalidInput, NotFound, ParleyError, RateLimited, RequestTimeout,
    TenantScopeError, TooLarge, Unauthorized, Unavailable, UnsupportedType,
)
from parley.http_errors import STATUS, make_error_middleware, status_for

log = logging.getLogger("tests.http_errors")

CASES: list[tuple[ParleyError, int]] = [
    (TooLarge("the file is over 5 MB"), 413),
    (UnsupportedType("a .exe cannot be read"), 415),
    (InvalidInput("message is empty"), 400),
    (Unauthorized("no API key"), 401),
    (Forbidden("tenant suspended", code="tenant_inactive"), 403),
    (NotFound("no such tenant"), 404),
    (AlreadyExists("already connected"), 409),
    (RequestTimeout("the body came too slowly"), 408),
    (Unavailable("the database is not answering"), 503),
    (TenantScopeError("unscoped query"), 500),
    (ConfigurationError("no secret key"), 500),
    # classes the map does not list: ours, not the caller's, so never a 4xx
    (Retryable("broker down"), 503),
    (Permanent("cannot help"), 500),
    (ParleyError("something of ours", code="odd"), 500),
]


def raising(exc: BaseException) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        raise exc

    return handler


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    """A tiny app behind a given error middleware, with a given route table."""
    clients: list[TestClient] = []

    async def make(middleware: Any, routes: dict[str, Any], state: dict[Any, Any] | None = None, **app_options: Any) -> TestClient:
        app = web.Application(middlewares=[middleware], **app_options)
        for key, value in (state or {}).items():
            app[key] = value
        for path, handler in routes.items():
            app.router.add_post(path, handler)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.mark.parametrize(("exc", "status"), CASES, ids=[f"{type(e).__name__}-{s}" for e, s in CASES])
async def test_each_error_class_answers_its_status_with_its_code(serve, exc: ParleyError, status: int) -> None:
    # Given an app whose handler raises a domain error
    client = await serve(make_error_middleware(logger=log), {"/x": raising(exc)})
    # When it is called
    resp = await client.post("/x")
    # Then the status is the class's, and the body carries the error's code and message
    assert status_for(exc) == status
    assert resp.status == status
    assert await resp.json() == {"error": exc.code, "detail": exc.message}


async def test_rate_limited_is_a_429_with_retry_after_in_the_body_and_the_header(serve) -> None:
    # Given a handler that refuses a caller for the next 2.2 seconds
    client = await serve(make_error_middleware(logger=log), {"/x": raising(RateLimited("slow down", retry_after=2.2))})
    # When it is called
    resp = await client.post("/x")
    # Then it is a 429 whose body and Retry-After header both say when to come back (whole seconds, rounded up)
    assert resp.status == 429 and resp.headers["Retry-After"] == "3"
    assert await resp.json() == {"error": "rate_limited", "detail": "slow down", "retry_after": 3}


def test_subclasses_come_before_their_bases() -> None:
    classes = [cls for cls, _ in STATUS]
    for i, cls in enumerate(classes):
        assert not any(issubclass(later, cls) for later in classes[i + 1:]), f"{cls.__name__} hides a subclass"


async def test_an_unknown_error_is_a_500_whose_id_is_logged_with_the_traceback(serve, caplog) -> None:
    # Given a handler with a bug
    client = await serve(make_error_middleware(logger=log), {"/x": raising(KeyError("oops"))})
    # When it is called
    with caplog.at_level(logging.ERROR, logger=log.name):
        resp = await client.post("/x")
    # Then the caller gets a 500 with an error id, and that id is logged with the traceback
    body = await resp.json()
    assert resp.status == 500 and body["error"] == "internal" and body["error_id"]
    assert body["error_id"] in body["detail"]
    [record] = [r for r in caplog.records if getattr(r, "error_id", None) == body["error_id"]]
    assert record.exc_info and record.exc_info[0] is KeyError


async def test_aiohttp_http_errors_get_the_same_json_shape(serve) -> None:
    # Given an app with a small body limit and a handler that redirects
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/elsewhere")

    client = await serve(make_error_middleware(logger=log), {"/x": raising(InvalidInput("never")), "/r": redirect},
                         client_max_size=1024)
    # When it gets a body over the limit, an unknown path, a wrong method, and the redirect
    huge = await client.post("/x", data=b"x" * 4096)
    missing = await client.post("/nothing-here")
    wrong = await client.get("/x")
    moved = await client.post("/r", allow_redirects=False)
    # Then each is the JSON error shape with a stable code; the redirect is untouched
    assert (huge.status, await huge.json()) == (413, {"error": "too_large", "detail": "request body is larger than the limit of 1,024 bytes"})
    assert (missing.status, (await missing.json())["error"]) == (404, "not_found")
    assert (wrong.status, (await wrong.json())["error"]) == (405, "method_not_allowed")
    assert (moved.status, moved.headers["Location"]) == (302, "/elsewhere")


async def test_the_hook_sees_every_error_answered_and_the_correlation_id_is_echoed(serve) -> None:
    # Given a middleware with a hook
    seen: list[tuple[str, int, str]] = []
    middleware = make_error_middleware(logger=log, on_error=lambda r, s, e: seen.append((r.path, s, type(e).__name__)))

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    client = await serve(middleware, {"/ok": ok, "/nf": raising(NotFound("no")), "/bug": raising(RuntimeError())})
    # When it answers a success, a domain error and a bug, with a good and a bad correlation id
    good = await client.post("/ok", headers={"X-Correlation-Id": "req-1"})
    await client.post("/nf")
    bad = await client.post("/bug", headers={"X-Correlation-Id": "not a token\t" * 10})
    # Then the hook saw the two errors, and the ids are echoed (a bad one replaced)
    assert seen == [("/nf", 404, "NotFound"), ("/bug", 500, "RuntimeError")]
    assert good.headers["X-Correlation-Id"] == "req-1"
    assert bad.headers["X-Correlation-Id"] and " " not in bad.headers["X-Correlation-Id"]


# --- the gateway and the retrieval service agree ----------------------------------------------------


@pytest.mark.parametrize(("exc", "status"), CASES, ids=[f"{type(e).__name__}-{s}" for e, s in CASES])
async def test_gateway_and_retrieval_answer_every_error_alike(serve, exc: ParleyError, status: int) -> None:
    from bot.http import error_middleware as gateway
    from retrieval.routes import error_middleware as retrieval

    # Given the same failing handler behind each app's error middleware
    answers = []
    for middleware in (gateway, retrieval):
        client = await serve(middleware, {"/x": raising(exc), "/bug": raising(ValueError("bug"))}, client_max_size=1024)
        resp, bug, huge = await client.post("/x"), await client.post("/bug"), await client.post("/x", data=b"x" * 4096)
        bug_body = await bug.json()
        answers.append((resp.status, await resp.json(), bug.status, bug_body["error"], bool(bug_body.get("error_id")),
                        huge.status, await huge.json()))
    # Then both answer identically
    assert answers[0] == answers[1]
    assert answers[0][0] == status and answers[0][2:5] == (500, "internal", True) and answers[0][5] == 413


async def test_retrieval_counts_a_failed_query_in_its_metrics(serve) -> None:
    from retrieval.metrics import RetrievalMetrics
    from retrieval.routes import METRICS, error_middleware

    # Given the retrieval middleware in front of a /v1/query that fails
    app_metrics = RetrievalMetrics()
    client = await serve(error_middleware, {"/v1/query": raising(RuntimeError("bug"))}, state={METRICS: app_metrics})
    # When it is called
    assert (await client.post("/v1/query")).status == 500
    # Then the failure is counted
    assert 'parley_retrieval_queries_total{outcome="error"} 1.0' in app_metrics.render().decode()


class _StubEmbedder:
    dimension = 384

    async def embed_query(self, text: str) -> np.ndarray:
        return np.ones(self.dimension, dtype=np.float32) / np.sqrt(self.dimension)

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_real_retrieval_app_answers_too_large_with_413(db_url: str, tmp_path: Path) -> None:
    from parley.crypto import load_service_token
    from parley.settings import Settings
    from retrieval.app import MAX_REQUEST_BYTES, RetrievalDeps, create_app
    from retrieval.config import RetrievalConfig

    # Given the retrieval service built by its factory, with one more route that raises TooLarge
    settings = Settings(database_url=db_url, data_dir=tmp_path / "var", log_json=False)
    app = create_app(settings, deps=RetrievalDeps(embedder=_StubEmbedder(), config=RetrievalConfig(warm_tenants=False)))
    app.router.add_post("/too-large", raising(TooLarge("the upload is over the limit")))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        # When a query body is over the service's limit, and a handler raises TooLarge
        token = {"Authorization": f"Bearer {load_service_token(settings)}"}  # the gateway's credential
        huge = await client.post("/v1/query", data=b"x" * (MAX_REQUEST_BYTES + 1), headers={"Content-Type": "application/json", **token})
        raised = await client.post("/too-large", headers=token)
        # Then both are a 413 too_large, as in the gateway
        assert (huge.status, (await huge.json())["error"]) == (413, "too_large")
        assert (raised.status, await raised.json()) == (413, {"error": "too_large", "detail": "the upload is over the limit"})
    finally:
        await client.close()
