"""The admin dashboard over HTTP: sign-in and its cookie, CSRF, tenant isolation (401/403/404), the
views' JSON, and a dead letter replayed through the real bus. (The browser drives it in
test_admin_browser.py.)"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from parley.bus import Envelope, Failure, record_dead_letter
from parley.bus.models import DeadLetter
from parley.bus.contracts import DOCUMENT_UPLOADED
from parley.db import unit_of_work
from parley.bus.models import OutboxMessage
from tenants import service as tenants
from tenants.models import ChannelKind
from tests.bot.conftest import IG_ACCOUNT, Stack, dm, eventually
from tests.bot.test_instagram import envelope, text_event

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


class Browser:
    """A client with its own cookie jar (one signed-in person), like a browser tab."""

    def __init__(self, stack: Stack) -> None:
        self.base = str(stack.client.make_url("")).rstrip("/")
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf: str | None = None

    async def login(self, key: str, next_: str = "/admin/documents") -> aiohttp.ClientResponse:
        return await self.http.post(f"{self.base}/admin/login", data={"api_key": key, "next": next_}, allow_redirects=False)

    async def signed_in(self, key: str) -> Browser:
        response = await self.login(key)
        assert response.status == 303, await response.text()
        self.csrf = (await self.json("GET", "/admin/api/session"))["csrf"]
        return self

    async def request(self, method: str, path: str, *, csrf: bool = True, **kwargs: Any) -> aiohttp.ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if method != "GET" and csrf and self.csrf:
            headers.setdefault("X-CSRF-Token", self.csrf)
        return await self.http.request(method, f"{self.base}{path}", headers=headers, allow_redirects=False, **kwargs)

    async def json(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        assert response.status == status, (path, response.status, await response.text())
        return await response.json()

    async def close(self) -> None:
        await self.http.close()


@pytest.fixture
async def browsers(stack: Stack) -> AsyncIterator[list[Browser]]:
    opened: list[Browser] = []
    yield opened
    for browser in opened:
        await browser.close()


def _open(stack: Stack, browsers: list[Browser]) -> Browser:
    browser = Browser(stack)
    browsers.append(browser)
    return browser


async def _dead_letter(stack: Stack, tenant_id: str, document_id: str = "0" * 32, reason: str = "PDF is password-protected",
                       failure: Failure | None = None) -> int:
    """A document message that failed for good (or with ``failure``), recorded as the consumer wrapper records one."""
    envelope = Envelope.new(DOCUMENT_UPLOADED, tenant_id=tenant_id, payload={"document_id": document_id})
    async with unit_of_work(stack.sessions, admin=True) as session:
        row = await record_dead_letter(session, queue="documents", message_id=envelope.id, message_type=envelope.type,
                                       tenant_id=tenant_id, correlation_id=None,
                                       failure=failure or Failure(code="pdf_encrypted", reason=reason, retryable=False),
                                       attempts=[{"attempt": 1, "error": reason}], body=envelope.to_bytes())
        return row.id


async def test_sign_in_sets_a_strict_http_only_session_cookie(stack: Stack, browsers: list[Browser]) -> None:
    anonymous = _open(stack, browsers)
    # When someone not signed in opens a page, calls the API, or signs in with a wrong key
    page = await anonymous.request("GET", "/admin/jobs")
    api = await anonymous.request("GET", "/admin/api/documents")
    form = await anonymous.request("GET", "/admin/login?next=/admin/jobs")
    wrong = await anonymous.login("pk_not-a-real-key")
    # Then the page sends them to the sign-in form (coming back afterwards), the API says 401
    assert page.status == 303 and page.headers["Location"] == "/admin/login?next=/admin/jobs"
    assert api.status == 401 and (await api.json())["error"] == "unauthorized"
    assert form.status == 200 and 'name="next" value="/admin/jobs"' in await form.text()
    assert wrong.status == 401 and "Unknown or revoked API key" in await wrong.text() and "Set-Cookie" not in wrong.headers
    # When they sign in with the tenant's key
    good = await anonymous.login(stack.api_key, next_="/admin/jobs")
    # Then the cookie is signed, HttpOnly, SameSite=Strict, scoped to /admin and never holds the key
    assert good.status == 303 and good.headers["Location"] == "/admin/jobs"
    cookie = good.headers["Set-Cookie"]
    assert re.search(r"parley_admin=[\w-]+\.[\w-]+;", cookie), cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert stack.api_key not in cookie
    # And the pages are served, with a strict content security policy, and the session names the tenant
    shell = await anonymous.request("GET", "/admin/jobs")
    assert shell.status == 200 and "Parley admin" in await shell.text()
    assert "script-src 'self'" in shell.headers["Content-Security-Policy"] and shell.headers["X-Frame-Options"] == "DENY"
    me = await anonymous.json("GET", "/admin/api/session")
    assert me["tenant"]["name"] == "acme" and me["key"]["prefix"] == stack.api_key[:10] and me["csrf"]
    # And an open redirect through ?next= is not possible
    evil = await _open(stack, browsers).login(stack.api_key, next_="//evil.example/admin")
    assert evil.headers["Location"] == "/admin/"


async def test_posts_need_the_sessions_csrf_token_and_a_same_origin(stack: Stack, browsers: list[Browser]) -> None:
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    acme2 = await _open(stack, browsers).signed_in(stack.api_key)  # a second session of the same key
    ask = {"message": "What is your returns policy?"}
    # When a POST comes without a token, with another session's token, from another origin, or cross-site
    missing = await acme.request("POST", "/admin/api/chat", json=ask, csrf=False)
    foreign = await acme.request("POST", "/admin/api/chat", json=ask, headers={"X-CSRF-Token": acme2.csrf or ""})
    forged = await acme.request("POST", "/admin/api/chat", json=ask, headers={"X-CSRF-Token": "e30.AAAA"})
    origin = await acme.request("POST", "/admin/api/chat", json=ask, headers={"Origin": "https://evil.example"})
    site = await acme.request("POST", "/admin/api/chat", json=ask, headers={"Sec-Fetch-Site": "cross-site"})
    login_elsewhere = await acme.http.post(f"{acme.base}/admin/login", data={"api_key": stack.api_key},
                                           headers={"Origin": "https://evil.example"}, allow_redirects=False)
    # Then each is refused with 403 and nothing was asked
    for response in (missing, foreign, forged, origin, site, login_elsewhere):
        assert response.status == 403, (response.status, await response.text())
        assert (await response.json())["error"] == "forbidden"
    assert stack.retrieval.requests == []
    # When the page's own POST carries its token, it is answered
    answer = await acme.json("POST", "/admin/api/chat", json=ask)
    assert answer["status"] == "answered" and answer["answer"]


async def test_a_forged_or_revoked_session_is_signed_out(stack: Stack, browsers: list[Browser]) -> None:
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    # Given a cookie whose payload was changed to another tenant (the signature no longer matches)
    [cookie] = [c for c in acme.http.cookie_jar if c.key == "parley_admin"]
    payload, mac = cookie.value.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["t"] = stack.other_tenant_id
    tampered = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode() + "." + mac
    forged = await acme.http.get(f"{acme.base}/admin/api/documents", cookies={"parley_admin": tampered})
    assert forged.status == 401
    # When the key the session was opened with is revoked
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        me = await acme.json("GET", "/admin/api/session")
        await tenants.revoke_api_key(session, tenant_id=stack.tenant_id, key_id=me["key"]["id"])
    # Then the session ends at once
    assert (await acme.request("GET", "/admin/api/documents")).status == 401
    assert (await acme.request("GET", "/admin/documents")).status == 303


async def test_logout_clears_the_cookie(stack: Stack, browsers: list[Browser]) -> None:
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    refused = await acme.request("POST", "/admin/logout", csrf=False)
    assert refused.status == 403
    out = await acme.request("POST", "/admin/logout", data={"csrf": acme.csrf})
    assert out.status == 303 and out.headers["Location"] == "/admin/login"
    assert "parley_admin=\"\"" in out.headers["Set-Cookie"] or "Max-Age=0" in out.headers["Set-Cookie"]
    assert (await acme.request("GET", "/admin/api/documents")).status == 401


async def test_a_tenants_dashboard_never_shows_another_tenants_data(stack: Stack, browsers: list[Browser]) -> None:
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    other = await _open(stack, browsers).signed_in(stack.other_api_key)
    # Given acme's document, job, DM, web chat message and dead letter
    form = aiohttp.FormData()
    form.add_field("file", b"Open Monday to Friday.\n", filename="hours.txt", content_type="text/plain")
    form.add_field("file", b"We ship in two days.\n", filename="ship.txt", content_type="text/plain")
    up = await acme.json("POST", "/admin/api/documents", status=202, data=form)
    await stack.post_slack(dm("hello"))
    await acme.json("POST", "/admin/api/chat", json={"message": "When are you open?"})
    await stack.settle()
    [message] = await stack.messages(channel="slack")
    dead = await _dead_letter(stack, stack.tenant_id, up["documents"][0]["id"])
    # When tenant other's admin asks for each of them, or replays acme's dead letter
    paths = [f"/admin/api/documents/{up['documents'][0]['id']}", f"/admin/api/jobs/{up['job_id']}",
             f"/admin/api/conversations/{message.id}"]
    theirs = [await other.request("GET", p) for p in paths]
    replay = await other.request("POST", f"/admin/api/dead-letters/{dead}/replay")
    # Then each is a 404 for them (the API does not confirm it exists), and their lists are empty
    assert [r.status for r in theirs] == [404, 404, 404] and replay.status == 404
    assert {(await r.json())["error"] for r in [*theirs, replay]} == {"not_found"}
    for view in ("documents", "jobs", "dead-letters", "conversations"):
        body = await other.json("GET", f"/admin/api/{view}")
        assert all(v == [] for k, v in body.items() if isinstance(v, list)), (view, body)
    assert (await other.json("GET", "/admin/api/channels"))["channels"] == []
    assert (await other.json("GET", "/admin/api/session"))["dead_letters"] == 0
    # And the dead letter was not touched; acme sees all of it
    async with unit_of_work(stack.sessions, admin=True) as session:
        assert (await session.get(DeadLetter, dead)).status == "dead"
    assert [(await acme.request("GET", p)).status for p in paths] == [200, 200, 200]
    mine = await acme.json("GET", "/admin/api/documents")
    assert sorted(d["filename"] for d in mine["documents"]) == ["hours.txt", "ship.txt"] and mine["counts"] == {"queued": 2}
    [job] = (await acme.json("GET", "/admin/api/jobs"))["jobs"]
    assert (job["total"], job["done"], job["failed"], job["report"]) == (2, 0, 0, "0 of 2 indexed")
    talk = await acme.json("GET", "/admin/api/conversations")
    assert {m["channel"] for m in talk["messages"]} == {"slack", "web"}
    assert talk["latency"]["answered"] == 2 and talk["latency"]["answer_ms_p50"] is not None
    [letter] = (await acme.json("GET", "/admin/api/dead-letters"))["dead_letters"]
    assert letter["id"] == dead and letter["subject"] == "hours.txt" and "password" in letter["reason"]


async def test_replay_goes_through_the_bus_once(stack: Stack, browsers: list[Browser]) -> None:
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    # Given a document message that ran out of attempts on a transient error (a replay may help)
    transient = Failure("unavailable", "unavailable: the embedding service did not answer", True).exhausted(5)
    dead = await _dead_letter(stack, stack.tenant_id, failure=transient)
    [offered] = (await acme.json("GET", "/admin/api/dead-letters"))["dead_letters"]
    assert offered["replayable"] is True

    async def connected() -> bool:
        return (await stack.client.get("/readyz")).status == 200

    await eventually(connected)
    # When acme's admin replays it
    body = await acme.json("POST", f"/admin/api/dead-letters/{dead}/replay", status=202)
    # Then the bus's replay staged a fresh copy (new id, attempt 1, marked as a replay) and published it
    async with unit_of_work(stack.sessions, admin=True) as session:
        row = await session.get(DeadLetter, dead)
        copy = (await session.execute(select(OutboxMessage).where(OutboxMessage.message_id == body["message_id"]))).scalar_one()
    assert row.status == "replayed" and row.replay_message_id == body["message_id"] != row.message_id
    assert copy.headers["x-parley-replay-of"] == row.message_id and Envelope.from_bytes(copy.body).attempt == 1

    async def published() -> bool:
        async with unit_of_work(stack.sessions, admin=True) as session:
            return (await session.get(OutboxMessage, copy.id)).published_at is not None

    await eventually(published)
    # And it leaves the default list, stays in the full one, and cannot be replayed twice
    assert (await acme.json("GET", "/admin/api/dead-letters"))["dead_letters"] == []
    [shown] = (await acme.json("GET", "/admin/api/dead-letters?all=1"))["dead_letters"]
    assert shown["status"] == "replayed" and shown["replayed_at"]
    again = await acme.request("POST", f"/admin/api/dead-letters/{dead}/replay")
    assert again.status == 409
    assert (await acme.request("POST", "/admin/api/dead-letters/nope/replay")).status == 400


async def test_replay_of_a_failure_for_good_is_not_offered_and_is_refused(stack: Stack, browsers: list[Browser]) -> None:
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    # Given a password-protected PDF uploaded through the dashboard and dead-lettered for good
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.7 not really", filename="locked.pdf", content_type="application/pdf")
    up = await acme.json("POST", "/admin/api/documents", status=202, data=form)
    document_id = up["documents"][0]["id"]
    dead = await _dead_letter(stack, stack.tenant_id, document_id)
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        from knowledge.models import Document, DocumentStatus

        document = await session.get(Document, document_id)
        document.status, document.error_code, document.error = DocumentStatus.failed, "pdf_encrypted", "PDF is password-protected"
    # When the dead-letter page is read
    [letter] = (await acme.json("GET", "/admin/api/dead-letters"))["dead_letters"]
    # Then the replay is not offered, and the row says what to do instead
    assert letter["id"] == dead and letter["replayable"] is False
    assert "locked.pdf" in letter["replay_note"] and "give the password" in letter["replay_note"]
    # And a replay asked for anyway is a 409 saying the same, and the dead letter stays as it was
    refused = await acme.request("POST", f"/admin/api/dead-letters/{dead}/replay")
    body = await refused.json()
    assert refused.status == 409 and body["error"] == "not_replayable" and "give the password" in body["detail"]
    async with unit_of_work(stack.sessions, admin=True) as session:
        assert (await session.get(DeadLetter, dead)).status == "dead"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_channels_show_installations_and_their_health(stack: Stack, browsers: list[Browser]) -> None:
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    async with unit_of_work(stack.sessions, admin=True) as session:
        await tenants.install_channel(session, box=stack.gw.box, tenant_id=stack.tenant_id, kind=ChannelKind.shopify,
                                      external_id="acme.myshopify.com", display_name="Acme Store",
                                      details={"shop_name": "Acme Store", "currency": "EUR"},
                                      secrets={"access_token": "shpat_secret"})
    # Given a Slack DM answered, and an Instagram DM whose answer failed (Graph refuses the token)
    await stack.post_slack(dm("What is your returns policy?"))
    await stack.settle()
    stack.graph.fail(400, 10, "This message is sent outside of allowed window.")
    await stack.post_instagram(envelope((IG_ACCOUNT, [text_event("Do you ship to Austria?")])))
    await stack.settle()
    # When the channels view is read
    channels = {c["kind"]: c for c in (await acme.json("GET", "/admin/api/channels"))["channels"]}
    # Then each installation is there with its health, and no secret leaves the server
    assert set(channels) == {"slack", "instagram", "shopify"}
    slack, instagram, shopify = channels["slack"], channels["instagram"], channels["shopify"]
    assert slack["health"] == "ok" and slack["events_total"] == 1 and slack["last_event_at"] and slack["last_error"] is None
    assert slack["details"]["team_id"] == "T043DB835ML"
    assert instagram["health"] == "failing" and "outside of allowed window" in instagram["last_error"], instagram
    assert shopify["health"] == "idle" and shopify["details"] == {"shop_name": "Acme Store", "currency": "EUR"}
    text = json.dumps(channels)
    assert "shpat_secret" not in text and "xoxb-" not in text and "IGAA" not in text
