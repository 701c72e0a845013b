"""Web chat and the admin API: API-key login, chat through the same conversation core, uploads
(streamed, capped, typed), status, tenant isolation, health and metrics; the chat page's headers and
its sign-in through the dashboard's cookie session (over HTTP and in a real browser)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import FormData

from tests.bot.conftest import Stack, dm, eventually
from tests.bot.test_admin import Browser

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def files(*items: tuple[str, bytes, str]) -> FormData:
    form = FormData()
    for name, body, content_type in items:
        form.add_field("file", body, filename=name, content_type=content_type)
    return form


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_chat_page_and_login(stack: Stack) -> None:
    # When the page is opened, and the API is called without a key, with a wrong one, and with a good one
    page = await stack.client.get("/chat")
    anonymous = await stack.client.get("/api/documents")
    wrong = await stack.client.get("/api/documents", headers=bearer("pk_not-a-real-key"))
    good = await stack.client.get("/api/documents", headers=bearer(stack.api_key))
    # Then the page is served, and only the real key gets in
    assert page.status == 200 and "Parley" in await page.text()
    assert (anonymous.status, wrong.status, good.status) == (401, 401, 200)
    assert (await wrong.json())["error"] == "unauthorized"
    assert await good.json() == {"documents": []}


async def test_chat_answers_through_the_conversation_core(stack: Stack) -> None:
    # When the tenant's admin asks a question twice in one conversation (the second a resend of the first)
    ask = {"message": "What is your returns policy?", "conversation_id": "c1", "client_message_id": "m1"}
    first = await stack.client.post("/api/chat", json=ask, headers=bearer(stack.api_key))
    again = await stack.client.post("/api/chat", json=ask, headers=bearer(stack.api_key))
    follow = await stack.client.post("/api/chat", json={"message": "And for sale items?", "conversation_id": "c1"},
                                     headers=bearer(stack.api_key))
    # Then the answer comes back in the response, a resend returns the same answer, and turns are kept
    body = await first.json()
    assert first.status == 200 and body["status"] == "answered" and body["answer"] and "citations" in body
    assert (await again.json())["message_id"] == body["message_id"] and (await again.json())["answer"] == body["answer"]
    assert follow.status == 200
    assert [t.text for t in stack.retrieval.requests[-1].turns] == ["What is your returns policy?", body["answer"]]
    # And the conversation is in the admin API with its latency
    listed = (await (await stack.client.get("/api/conversations", headers=bearer(stack.api_key))).json())["messages"]
    assert len(listed) == 2 and all(m["channel"] == "web" and m["answer_ms"] is not None for m in listed)


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_chat_refuses_bad_input_and_reports_an_outage(stack: Stack) -> None:
    empty = await stack.client.post("/api/chat", json={"message": "  "}, headers=bearer(stack.api_key))
    not_json = await stack.client.post("/api/chat", data=b"{oops", headers=bearer(stack.api_key))
    assert (empty.status, not_json.status) == (400, 400)
    assert (await not_json.json())["error"] == "invalid_input"
    # Given the retrieval service down
    stack.retrieval.failures = 100
    down = await stack.client.post("/api/chat", json={"message": "Hello?"}, headers=bearer(stack.api_key))
    assert down.status == 503 and (await down.json())["error"] == "unavailable" and "error id" in (await down.json())["detail"]


async def test_upload_is_queued_and_its_status_visible(stack: Stack) -> None:
    # When two documents are uploaded in one request
    response = await stack.client.post("/api/documents", data=files(
        ("faq.md", b"# FAQ\n\nWe answer within a day.\n", "text/markdown"),
        ("hours.txt", b"Open Monday to Friday, 9 to 5.\n", "text/plain"),
    ), headers=bearer(stack.api_key))
    # Then both are queued as one job, and the list and the job show them
    assert response.status == 202
    body = await response.json()
    assert sorted(d["filename"] for d in body["documents"]) == ["faq.md", "hours.txt"] and body["job_id"]
    assert {d["status"] for d in body["documents"]} == {"queued"}
    listed = (await (await stack.client.get("/api/documents", headers=bearer(stack.api_key))).json())["documents"]
    assert len(listed) == 2
    job = await (await stack.client.get(f"/api/jobs/{body['job_id']}", headers=bearer(stack.api_key))).json()
    assert (job["total"], job["status"], job["report"]) == (2, "running", "0 of 2 indexed")
    one = await stack.client.get(f"/api/documents/{listed[0]['id']}", headers=bearer(stack.api_key))
    assert (await one.json())["status"] == "queued"


async def test_oversized_and_unsupported_uploads_are_refused_with_reasons(stack: Stack) -> None:
    # When a file over the 64 KB limit, an image, and a mix of good and bad arrive
    big = await stack.client.post("/api/documents", data=files(("big.txt", b"x" * (65 * 1024), "text/plain")),
                                  headers=bearer(stack.api_key))
    image = await stack.client.post("/api/documents", data=files(("cat.png", b"\x89PNG\r\n\x1a\n", "image/png")),
                                    headers=bearer(stack.api_key))
    mixed = await stack.client.post("/api/documents", data=files(("ok.txt", b"fine\n", "text/plain"),
                                                                 ("cat.png", b"\x89PNG", "image/png")),
                                    headers=bearer(stack.api_key))
    nothing = await stack.client.post("/api/documents", data=b"", headers=bearer(stack.api_key))
    # Then: 413 and 415 with the reason, the good file of the mix accepted with the other listed, 400
    assert big.status == 413 and "limit" in (await big.json())["detail"]
    assert image.status == 415 and "cannot read" in (await image.json())["detail"]
    mixed_body = await mixed.json()
    assert mixed.status == 202 and [d["filename"] for d in mixed_body["documents"]] == ["ok.txt"]
    assert mixed_body["rejected"][0]["filename"] == "cat.png"
    assert nothing.status == 400
    listed = (await (await stack.client.get("/api/documents", headers=bearer(stack.api_key))).json())["documents"]
    assert [d["filename"] for d in listed] == ["ok.txt"]


async def test_another_tenants_resources_are_not_found(stack: Stack) -> None:
    # Given tenant acme's document, job and DM
    up = await (await stack.client.post("/api/documents", data=files(("a.txt", b"alpha\n", "text/plain"),
                                                                      ("b.txt", b"beta\n", "text/plain")),
                                        headers=bearer(stack.api_key))).json()
    await stack.post_slack(dm("hello"))
    await stack.settle()
    [message] = await stack.messages(channel="slack")
    doc_id, job_id = up["documents"][0]["id"], up["job_id"]
    # When tenant other asks for them with its own key
    paths = [f"/api/documents/{doc_id}", f"/api/jobs/{job_id}", f"/api/conversations/{message.id}"]
    theirs = [await stack.client.get(p, headers=bearer(stack.other_api_key)) for p in paths]
    ours = [await stack.client.get(p, headers=bearer(stack.api_key)) for p in paths]
    # Then every one is a 404 for them, and found for acme; their lists are empty
    assert [r.status for r in theirs] == [404, 404, 404]
    assert {(await r.json())["error"] for r in theirs} == {"not_found"}
    assert [r.status for r in ours] == [200, 200, 200]
    for path in ("/api/documents", "/api/jobs", "/api/conversations"):
        body = await (await stack.client.get(path, headers=bearer(stack.other_api_key))).json()
        assert list(body.values()) == [[]]


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_health_readiness_and_metrics(stack: Stack) -> None:
    health = await stack.client.get("/healthz")
    assert health.status == 200

    async def ready() -> bool:
        return (await stack.client.get("/readyz")).status == 200

    await eventually(ready)  # the broker connects in the background
    body = await (await stack.client.get("/readyz")).json()
    assert body["status"] == "ready" and body["problems"] == {}
    await stack.post_slack(dm())
    await stack.settle()
    text = await (await stack.client.get("/metrics")).text()
    assert 'parley_gateway_answers_total{channel="slack",status="answered"} 1.0' in text
    assert "parley_gateway_ack_seconds_bucket" in text and "parley_gateway_answer_seconds_count" in text
    missing = await stack.client.get("/no/such/path")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_chat_page_has_the_dashboards_headers_and_no_key_in_script(stack: Stack) -> None:
    # When the chat page and its script and style are fetched
    responses = {path: await stack.client.get(path) for path in ("/chat", "/chat/static/chat.js", "/chat/static/chat.css")}
    page = await responses["/chat"].text()
    script = await responses["/chat/static/chat.js"].text()
    # Then each carries the dashboard's headers: a CSP without inline script, no framing, no sniffing
    for path, response in responses.items():
        assert response.status == 200, path
        csp = response.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, path
        assert response.headers.get("X-Frame-Options") == "DENY", path
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
    assert responses["/chat/static/chat.js"].content_type.endswith("javascript")  # nosniff needs a script type
    # And the page runs no inline script or style (the CSP would block them), and keeps no key in storage
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/chat/static/chatui.js">',
                                                  '<script src="/chat/static/chat.js">'] and "<style" not in page
    assert "Authorization" not in script and "parley-key" not in script
    assert "/admin/login?next=/chat" in page and "/admin/api/chat" in script and "X-CSRF-Token" in script


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_chat_page_signs_in_with_the_dashboards_cookie_session(stack: Stack) -> None:
    # Given a person who opens /chat and follows its sign-in link, like the page's script
    person = Browser(stack)
    try:
        form = await person.request("GET", "/admin/login?next=/chat")
        assert 'name="next" value="/chat"' in await form.text()
        # When they sign in there with the tenant's API key
        signed_in = await person.login(stack.api_key, next_="/chat")
        # Then they are sent back to the chat page with an HttpOnly, SameSite=Strict session cookie
        assert (signed_in.status, signed_in.headers["Location"]) == (303, "/chat")
        cookie = signed_in.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and stack.api_key not in cookie
        # When the page asks, with the session but without its CSRF token, and then with it
        person.csrf = (await person.json("GET", "/admin/api/session"))["csrf"]
        ask = {"message": "What is your returns policy?", "conversation_id": "page"}
        forged = await person.request("POST", "/admin/api/chat", json=ask, csrf=False)
        answered = await person.json("POST", "/admin/api/chat", json=ask)
        # Then only the request carrying the token is answered
        assert forged.status == 403 and (await forged.json())["error"] == "forbidden"
        assert answered["status"] == "answered" and answered["answer"]
    finally:
        await person.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_chat_page_works_in_a_browser_under_its_csp(stack: Stack) -> None:
    from tests.support.browser import chromium_paths, start_chromium

    chromium_paths()  # skips when there is no headless browser here
    driver = await asyncio.to_thread(start_chromium)
    base = str(stack.client.make_url("")).rstrip("/")
    try:
        # When a person opens the chat page, signs in with the key, and asks a question
        storage = await asyncio.to_thread(_chat_in_browser, driver, base, stack.api_key)
    finally:
        await asyncio.to_thread(driver.quit)
    # Then the answer arrived through the session (the script ran under the CSP), and no script holds the key
    assert storage["answer"] and not storage["answer"].startswith("Error")
    assert stack.api_key not in storage["session"] + storage["local"] + storage["cookie"]


def _chat_in_browser(driver: Any, base: str, api_key: str) -> dict[str, str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 60, poll_frequency=0.1)  # a bound for a loaded machine, not a measurement
    driver.get(f"{base}/chat")
    wait.until(ec.url_contains("/admin/login"))  # the page's script sends a signed-out person to the sign-in
    wait.until(ec.visibility_of_element_located((By.ID, "api_key"))).send_keys(api_key)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait.until(ec.url_to_be(f"{base}/chat"))
    wait.until(ec.visibility_of_element_located((By.ID, "question"))).send_keys("What is your returns policy?")
    driver.find_element(By.ID, "send").click()
    answer = wait.until(lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, ".msg.answer, .msg.err")), None))
    return {"answer": answer, "session": driver.execute_script("return JSON.stringify(sessionStorage)"),
            "local": driver.execute_script("return JSON.stringify(localStorage)"),
            "cookie": driver.execute_script("return document.cookie")}
