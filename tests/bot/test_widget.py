"""The embeddable web chat widget through the real app: created in the dashboard (and the CLI), its
frame framed only by its sites (CSP ``frame-ancestors``, ``Referer``), anonymous visitor sessions
that only its own frame may use, a revoked widget stopping at once, and visitors rate-limited like
every other sender."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from parley.db import unit_of_work
from tenants import widgets
from tests.bot.conftest import Stack
from tests.bot.test_admin import Browser
from tests.bot.test_limits import FakeClock

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SHOP = "https://shop.example"
FRAME = {"Origin": "http://gateway.test", "Sec-Fetch-Site": "same-origin"}  # what the widget's own frame sends


async def new_widget(stack: Stack, *origins: str, tenant_id: str | None = None) -> str:
    async with unit_of_work(stack.sessions, tenant_id=tenant_id or stack.tenant_id) as session:
        widget = await widgets.create_widget(session, tenant_id=tenant_id or stack.tenant_id, origins=list(origins or (SHOP,)))
    return widget.id


async def visitor(stack: Stack, widget_id: str, *, embedder: str | None = SHOP, headers: dict[str, str] | None = None) -> Any:
    return await stack.client.post(f"/chat/w/{widget_id}/session", json={"embedder": embedder}, headers=headers or FRAME)


async def ask(stack: Stack, widget_id: str, token: str, message: str = "What is your returns policy?", **extra: Any) -> Any:
    return await stack.client.post(f"/chat/w/{widget_id}/chat", json={"message": message, **extra},
                                   headers={**FRAME, "Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_dashboard_creates_a_widget_and_shows_its_snippet(stack: Stack) -> None:
    person = Browser(stack)
    try:
        await person.signed_in(stack.api_key)
        # When the admin creates a widget for their shop (written loosely) and asks for a bad one
        made = await person.json("POST", "/admin/api/widgets", status=201, json={"origins": ["HTTPS://Shop.Example:443/"]})
        bad = await person.request("POST", "/admin/api/widgets", json={"origins": ["shop.example/contact"]})
        none = await person.request("POST", "/admin/api/widgets", json={"origins": []})
        listed = (await person.json("GET", "/admin/api/widgets"))["widgets"]
        # Then the widget has a public id, its one origin normalised, and the snippet to paste
        assert re.fullmatch(r"wgt_[\w-]{16}", made["id"]) and made["allowed_origins"] == [SHOP]
        assert made["snippet"] == f'<script src="http://gateway.test/chat/widget.js" data-widget="{made["id"]}" async></script>'
        assert (bad.status, (await bad.json())["error"], none.status) == (400, "invalid_input", 400)
        assert [w["id"] for w in listed] == [made["id"]]
        # When its sites are changed, and it is switched off
        changed = await person.json("POST", f"/admin/api/widgets/{made['id']}/origins", json={"origins": f"{SHOP} http://localhost:3000"})
        revoked = await person.json("POST", f"/admin/api/widgets/{made['id']}/revoke")
        assert changed["allowed_origins"] == [SHOP, "http://localhost:3000"] and revoked["status"] == "revoked"
        # And another tenant's admin cannot touch it, nor see it
        other = Browser(stack)
        try:
            await other.signed_in(stack.other_api_key)
            foreign = await other.request("POST", f"/admin/api/widgets/{made['id']}/revoke")
            assert foreign.status == 404 and (await other.json("GET", "/admin/api/widgets"))["widgets"] == []
        finally:
            await other.close()
        # And the channels page has the section to copy the snippet from
        page = await (await person.request("GET", "/admin/channels")).text()
        assert 'id="widgets"' in page and "Web chat widget" in page
    finally:
        await person.close()


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_widget_frame_may_be_framed_only_by_its_sites(stack: Stack) -> None:
    widget_id = await new_widget(stack, SHOP, "http://localhost:3000")
    # When the frame is fetched as the shop's page embeds it, from another site, and for no widget
    framed = await stack.client.get(f"/chat/w/{widget_id}", headers={"Referer": f"{SHOP}/products/tent"})
    foreign = await stack.client.get(f"/chat/w/{widget_id}", headers={"Referer": "https://evil.example/"})
    unknown = await stack.client.get("/chat/w/wgt_nosuchwidget0000")
    script = await stack.client.get("/chat/widget.js")
    # Then the shop gets the chat, framable by the widget's sites only, under a CSP without inline code
    assert framed.status == 200 and 'src="/chat/static/frame.js"' in await framed.text()
    csp = framed.headers["Content-Security-Policy"]
    assert f"frame-ancestors {SHOP} http://localhost:3000;" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" not in csp
    assert "X-Frame-Options" not in framed.headers and framed.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in await framed.text() and "<style" not in await framed.text()
    # And another site gets a refusal, an unknown widget a 404, neither framable
    assert foreign.status == 403 and "evil.example" in await foreign.text()
    assert unknown.status == 404
    for refused in (foreign, unknown):
        assert "frame-ancestors 'none'" in refused.headers["Content-Security-Policy"] and refused.headers["X-Frame-Options"] == "DENY"
    # And the loader script is JavaScript (nosniff), cacheable, and holds no key
    assert script.status == 200 and script.content_type == "application/javascript"
    assert "max-age" in script.headers["Cache-Control"] and "pk_" not in await script.text()


async def test_a_visitor_asks_anonymously_through_the_widget(stack: Stack) -> None:
    widget_id = await new_widget(stack)
    # When the frame opens a visitor session for the shop's page and the visitor asks twice
    opened = await visitor(stack, widget_id)
    session = await opened.json()
    first = await ask(stack, widget_id, session["token"], conversation_id="c1", client_message_id="m1")
    again = await ask(stack, widget_id, session["token"], conversation_id="c1", client_message_id="m1")
    follow = await ask(stack, widget_id, session["token"], "And for sale items?", conversation_id="c1")
    # Then the visitor is told whose chat this is and gets cited answers, a resend answered once
    assert opened.status == 200 and session["tenant"]["display_name"] == "acme" and stack.api_key not in await opened.text()
    body = await first.json()
    assert first.status == 200 and body["status"] == "answered" and body["answer"] and "citations" in body
    assert (await again.json())["message_id"] == body["message_id"]
    assert follow.status == 200
    assert [t.text for t in stack.retrieval.requests[-1].turns] == ["What is your returns policy?", body["answer"]]
    # And the messages are the tenant's, from an anonymous visitor of the web channel
    rows = await stack.messages(channel="web")
    assert len(rows) == 2 and {r.tenant_id for r in rows} == {stack.tenant_id}
    assert {r.sender_id for r in rows} == {f"visitor:{session['visitor']}"}


async def test_the_widget_refuses_other_sites_stolen_sessions_and_a_revoked_widget(stack: Stack) -> None:
    widget_id = await new_widget(stack)
    theirs = await new_widget(stack, "https://other.example", tenant_id=stack.other_tenant_id)
    token = (await (await visitor(stack, widget_id)).json())["token"]
    # When another site's script asks for a session, or a page of another site embeds the frame
    cross_origin = await visitor(stack, widget_id, headers={"Origin": "https://evil.example"})
    cross_site = await visitor(stack, widget_id, headers={"Sec-Fetch-Site": "cross-site"})
    wrong_embedder = await visitor(stack, widget_id, embedder="https://evil.example")
    # Then each is refused, with the reason
    assert [r.status for r in (cross_origin, cross_site, wrong_embedder)] == [403, 403, 403]
    assert "evil.example" in (await wrong_embedder.json())["detail"]
    # When a visitor's token is used at another tenant's widget, a forged or missing one, or an admin key
    stolen = await ask(stack, theirs, token)
    forged = await ask(stack, widget_id, token[:-4] + "AAAA")
    missing = await stack.client.post(f"/chat/w/{widget_id}/chat", json={"message": "hi"}, headers=FRAME)
    admin_key = await ask(stack, widget_id, stack.api_key)
    from_elsewhere = await stack.client.post(f"/chat/w/{widget_id}/chat", json={"message": "hi"},
                                             headers={"Origin": "https://evil.example", "Authorization": f"Bearer {token}"})
    # Then none is answered
    assert [r.status for r in (stolen, forged, missing, admin_key)] == [401, 401, 401, 401]
    assert {(await r.json())["error"] for r in (stolen, forged, missing, admin_key)} == {"unauthorized"}
    assert from_elsewhere.status == 403
    assert await stack.messages(channel="web") == []
    # When the tenant switches the widget off
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        await widgets.revoke_widget(session, tenant_id=stack.tenant_id, widget_id=widget_id)
    # Then its frame, new sessions and the sessions already open all stop at once
    assert (await stack.client.get(f"/chat/w/{widget_id}", headers={"Referer": SHOP})).status == 404
    assert (await visitor(stack, widget_id)).status == 404
    assert (await ask(stack, widget_id, token)).status == 404


async def test_anonymous_visitors_are_rate_limited_like_other_senders(make_stack: Any) -> None:
    # Given a gateway where a sender may ask 2 questions at once and an address open 2 sessions at once
    clock = FakeClock()
    stack: Stack = await make_stack(clock=clock, sender_question_burst=2, sender_questions_per_minute=6.0,
                                    widget_session_burst=2, widget_sessions_per_minute=6.0)
    widget_id = await new_widget(stack)
    token = (await (await visitor(stack, widget_id)).json())["token"]
    # When the visitor asks 3 questions at once
    asked = [await ask(stack, widget_id, token, f"Question {i}?") for i in range(3)]
    # Then the third is refused with when to come back, in the visitor's words
    assert [r.status for r in asked] == [200, 200, 429]
    refused = await asked[2].json()
    assert refused["error"] == "rate_limited" and refused["retry_after"] > 0 and asked[2].headers["Retry-After"]
    assert refused["detail"].startswith("you are asking faster")
    # When the same address opens new sessions to get fresh buckets
    sessions = [await visitor(stack, widget_id) for _ in range(2)]
    # Then the second new one is refused too (2 at once, the first session included)
    assert [r.status for r in sessions] == [200, 429] and (await sessions[1].json())["error"] == "rate_limited"
    # When 10 s pass: one more question and one more session are let through
    clock.advance(10)
    assert (await ask(stack, widget_id, token, "Later?")).status == 200
    assert (await visitor(stack, widget_id)).status == 200
    assert len(await stack.messages(channel="web")) == 3


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_cli_creates_lists_and_revokes_widgets(stack: Stack, tmp_path: Path) -> None:
    # Given the `parley` command pointed at the gateway's database, as an operator's would be
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=stack.settings.effective_database_url, PARLEY_DATA_DIR=str(stack.settings.data_dir),
               PARLEY_PUBLIC_URL="https://chat.acme.example", COLUMNS="250")

    def parley(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=120)

    # When a widget is created for the shop, and one for something that is not a site
    made = await asyncio.to_thread(parley, "--json", "widgets", "create", "--tenant", "acme", "--origin", SHOP)
    bad = await asyncio.to_thread(parley, "widgets", "create", "--tenant", "acme", "--origin", "ftp://shop.example")
    # Then the first prints its snippet, the second one line saying why
    assert made.returncode == 0, made.stderr
    widget = json.loads(made.stdout)
    assert widget["snippet"] == f'<script src="https://chat.acme.example/chat/widget.js" data-widget="{widget["id"]}" async></script>'
    assert bad.returncode == 1 and "is not an origin" in bad.stderr and "Traceback" not in bad.stderr
    # And it is listed; once revoked, the gateway no longer opens sessions for it
    listed = await asyncio.to_thread(parley, "widgets", "list", "--tenant", "acme")
    assert widget["id"] in listed.stdout
    # (by a unique prefix of its id, as every id is typed)
    revoked = await asyncio.to_thread(parley, "widgets", "revoke", widget["id"][:10], "--tenant", "acme")
    assert revoked.returncode == 0 and "switched off" in revoked.stdout
    assert (await visitor(stack, widget["id"])).status == 404
