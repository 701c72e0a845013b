"""The web chat and the embeddable widget in a real headless Chromium, with screenshots.

The real gateway app (on a free port) and the real retrieval service over a guide from
../shared/data, indexed by the real chunker and embedding model. A person signs in, asks with Enter
and gets an answer with its sources as links and its latency; a long answer leaves its question in
view; Shift+Enter makes a new line; a fast asker gets a readable 429 bubble and an expired session a
"sign in again" one; a file goes up from beside the input; the page fits a phone. Then a shop's page
on another local origin, under a strict CSP of its own, embeds the widget with its snippet: the
button opens the chat in a frame and an anonymous visitor asks through it; a site the widget does
not list gets no chat at all. Screenshots go to ``var/screenshots/chat/`` (or
``$PARLEY_SCREENSHOT_DIR``) and the folder is printed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from parley.db import unit_of_work
from parley.vectors import create_vector_index
from tenants import widgets
from tests.bot.conftest import Stack
from tests.retrieval.support import Embeddings, Seeded, add_document
from tests.support import services
from tests.support.browser import chromium_paths, screenshot_dir, start_chromium

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.shared]

ROOT = Path(__file__).resolve().parents[2]
GUIDE = services.SHARED_DATA / "docs" / "md" / "pip-doc__topics_repeatable-installs.md"
UPLOAD = services.SHARED_DATA / "docs" / "md" / "pip-doc__topics_authentication.md"
LONG_QUESTION = "Tell me everything about repeatable installs, step by step"
LONG_ANSWER = "\n".join(f"Step {i}: pin every requirement with == and keep the hashes in the lock file." for i in range(1, 61))


def shop_page(snippet: dict[str, str]) -> web.Application:
    """A tenant's own site: one page with the widget's snippet, under a strict CSP of its own."""
    async def page(request: web.Request) -> web.Response:
        gateway, widget_id = snippet["gateway"], snippet["widget"]
        body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Acme Outdoor</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>Acme Outdoor</h1><p>Tents, boots and everything for the trail.</p>
<script src="{gateway}/chat/widget.js" data-widget="{widget_id}" async></script></body></html>"""
        csp = f"default-src 'self'; script-src {gateway}; frame-src {gateway}; style-src 'none'; img-src 'self'"
        return web.Response(text=body, content_type="text/html", headers={"Content-Security-Policy": csp})

    app = web.Application()
    app.router.add_get("/", page)
    return app


@pytest.fixture
async def chat_stack(make_stack: Callable[..., Awaitable[Stack]], embedder: Any) -> Any:
    if not (GUIDE.exists() and UPLOAD.exists()):
        pytest.skip(f"../shared/data is missing (looked for {GUIDE}); the chat browser test needs its documents")
    chromium_paths()  # skip before starting anything when there is no browser
    # Given a gateway where one sender may ask 3 questions at once (the 4th is refused), and the guide indexed
    stack = await make_stack(sender_question_burst=3, sender_questions_per_minute=0.5)
    writer = create_vector_index(stack.settings, role="writer", sessions=stack.sessions)
    guide_id = await add_document(stack.sessions, writer, Embeddings(embedder), Seeded(stack.tenant_id, "acme", "acme"),
                                  GUIDE.name, GUIDE.read_text())
    await writer.aclose()
    stack.retrieval.texts[LONG_QUESTION] = LONG_ANSWER
    gateway = str(stack.client.make_url("")).rstrip("/")
    snippet = {"gateway": gateway}
    hosts = [TestServer(shop_page(snippet)), TestServer(shop_page(snippet))]  # the shop, and a site not listed
    for host in hosts:
        await host.start_server()
    shop, elsewhere = (str(h.make_url("")).rstrip("/") for h in hosts)
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        widget = await widgets.create_widget(session, tenant_id=stack.tenant_id, origins=[shop], name="Acme shop")
    snippet["widget"] = widget.id
    driver = await asyncio.to_thread(start_chromium)
    yield stack, driver, {"gateway": gateway, "shop": shop, "elsewhere": elsewhere, "guide_id": guide_id}
    await asyncio.to_thread(driver.quit)
    for host in hosts:
        await host.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_chat_and_the_widget_in_a_browser(chat_stack: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stack, driver, where = chat_stack
    shots = screenshot_dir(ROOT / "var" / "screenshots" / "chat")
    for old in [*shots.glob("*.png"), *shots.glob("failure.html")]:
        old.unlink()
    started = time.monotonic()
    try:  # Selenium blocks: it runs in a thread while this loop serves the gateway
        loop = asyncio.get_running_loop()

        def hold(on: bool) -> None:  # hold the answers at the retrieval front's gate, or let them go
            loop.call_soon_threadsafe(stack.retrieval.gate.clear if on else stack.retrieval.gate.set)

        seen = await asyncio.to_thread(_walk_through, driver, where, stack.api_key, shots, hold)
    except Exception:
        await asyncio.to_thread(driver.save_screenshot, str(shots / "failure.png"))
        (shots / "failure.html").write_text(await asyncio.to_thread(lambda: driver.page_source))
        with capsys.disabled():
            print(f"\nthe chat browser test failed; its last page is in {shots}/failure.png and failure.html")
        raise
    with capsys.disabled():
        print(f"\nweb chat and widget screenshots ({time.monotonic() - started:.1f}s in the browser): {shots}")
    # And the server saw the widget's question as an anonymous visitor of the tenant
    senders = {m.sender_id.split(":")[0] for m in await stack.messages(channel="web")}
    assert senders == {"api_key", "visitor"}, senders
    assert seen["host_storage"] == "{}" and seen["host_cookie"] == ""
    assert len(list(shots.glob("*.png"))) >= 11


def _walk_through(driver: Any, where: dict[str, str], api_key: str, shots: Path, hold: Callable[[bool], None]) -> dict[str, str]:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base = where["gateway"]
    # Generous bounds for a loaded machine; never a measurement.
    wait = WebDriverWait(driver, 60, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])

    def find(css: str, root: Any = None) -> Any:
        return wait.until(lambda d: next((e for e in (root or d).find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None))

    def count(css: str) -> int:
        return len(driver.find_elements(By.CSS_SELECTOR, css))

    def shot(name: str) -> None:
        driver.save_screenshot(str(shots / f"{name}.png"))

    def ask(text: str) -> Any:
        """Type the question and press Enter; the newest bubble once the agent has replied."""
        before = count(".msg.answer, .msg.err")
        find("#question").send_keys(text, Keys.ENTER)
        wait.until(lambda d: count(".msg.answer, .msg.err") > before and not count(".msg.typing"))
        return driver.find_elements(By.CSS_SELECTOR, ".msg.answer, .msg.err")[-1]

    def in_view(css: str, scroller: str = "#log") -> bool:
        return driver.execute_script(
            "const e = Array.from(document.querySelectorAll(arguments[0])).pop().getBoundingClientRect();"
            "const s = document.querySelector(arguments[1]).getBoundingClientRect();"
            "return e.top >= s.top - 1 && e.top < s.bottom && e.bottom <= window.innerHeight + 1;", css, scroller)

    # When a person opens the chat: it sends them to sign in, then back, with the tenant's name in the header
    driver.get(f"{base}/chat")
    wait.until(ec.url_contains("/admin/login"))
    find("#api_key").send_keys(api_key)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait.until(ec.url_to_be(f"{base}/chat"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "tenant"), "acme"))
    assert find("#logout").location["y"] < 60  # sign-out in the header; the upload button beside the input
    attach, question = find("#attach").rect, find("#question").rect
    assert abs(attach["y"] + attach["height"] / 2 - (question["y"] + question["height"] / 2)) < 12

    # And Shift+Enter makes a new line instead of sending
    find("#question").send_keys("first line", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "second line")
    assert driver.execute_script("return document.getElementById('question').value") == "first line\nsecond line"
    assert count(".msg.me") == 0
    driver.execute_script("document.getElementById('question').value = ''")

    # When they ask about the guide with Enter
    answer = ask("How does hash-checking protect my installs?")
    # Then the answer is on the left, the question on the right, with its sources linked to the dashboard and its latency
    link = answer.find_element(By.CSS_SELECTOR, ".cite a")
    assert GUIDE.name in link.text and link.get_attribute("href") == f"{base}/admin/documents/{where['guide_id']}"
    assert answer.find_element(By.CSS_SELECTOR, ".meta").text.endswith(("ms", " s"))
    me = driver.find_element(By.CSS_SELECTOR, ".msg.me").rect
    assert me["x"] > answer.rect["x"] + answer.rect["width"] / 2
    shot("01-chat-answer-with-sources")

    # When a question gets a long answer, the question stays in view above it, and the input too
    ask(LONG_QUESTION)
    assert in_view(".msg.me") and in_view("#question", "body")
    shot("02-long-answer-keeps-the-question-in-view")

    # When they upload a file from beside the input, the conversation says it was received
    driver.find_element(By.ID, "files").send_keys(str(UPLOAD))
    wait.until(lambda d: UPLOAD.name in d.find_element(By.CSS_SELECTOR, ".msg.note.upload").text and
               "received" in d.find_element(By.CSS_SELECTOR, ".msg.note.upload").text)

    # When an answer takes a while: a typing indicator shows it is on its way, and Send waits for it
    hold(True)
    find("#question").send_keys("Is hash-checking on by default?", Keys.ENTER)
    find(".msg.typing")
    assert not driver.find_element(By.ID, "send").is_enabled()
    shot("03-answer-on-its-way")
    hold(False)
    wait.until(lambda d: count(".msg.answer") == 3 and not count(".msg.typing"))

    # When they ask faster than allowed: a readable bubble says when to come back, with a retry button
    limited = ask("And what about pip-tools?")
    assert limited.get_attribute("data-status") == "429" and "faster than I can answer" in limited.text
    limited.find_element(By.CSS_SELECTOR, "button.retry")
    shot("04-rate-limited")

    # When the session has ended meanwhile: a bubble says so, with the way back in
    driver.execute_cdp_cmd("Network.deleteCookies", {"name": "parley_admin", "url": f"{base}/admin/"})  # path /admin
    expired = ask("Still there?")
    assert expired.get_attribute("data-status") == "401" and "expired" in expired.text
    assert expired.find_element(By.CSS_SELECTOR, "a.sign-in").get_attribute("href").endswith("/admin/login?next=/chat")
    shot("05-session-expired")
    # And its link signs them in again and brings them back to the chat
    expired.find_element(By.CSS_SELECTOR, "a.sign-in").click()
    find("#api_key").send_keys(api_key)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait.until(ec.url_to_be(f"{base}/chat"))
    # And the conversation so far is still there, in order, its answers with their sources (the 3
    # answered; the refused questions were never stored)
    wait.until(lambda d: count(".msg.me") == 3)
    assert driver.find_elements(By.CSS_SELECTOR, ".msg.me")[0].text == "How does hash-checking protect my installs?"
    assert GUIDE.name in driver.find_elements(By.CSS_SELECTOR, ".msg.answer")[0].find_element(By.CSS_SELECTOR, ".cite a").text

    # When the network is gone: a bubble says so
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    offline = ask("Hello?")
    driver.set_network_conditions(offline=False, latency=0, download_throughput=-1, upload_throughput=-1)
    assert offline.get_attribute("data-status") == "network" and "couldn't reach the server" in offline.text.lower()

    # And on a phone the page fits the width, the input stays on screen, the bubbles fit
    driver.set_window_size(390, 844)
    wait.until(lambda d: d.execute_script("return window.innerWidth") <= 400)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert in_view("#question", "body")
    shot("06-phone")
    driver.set_window_size(1366, 1000)

    # When the admin creates a widget on the dashboard's channels page, its snippet is there to copy
    driver.get(f"{base}/admin/channels")
    find("#widget-origins").send_keys("https://Shop.Example")
    driver.find_element(By.CSS_SELECTOR, "#widget-form button").click()
    wait.until(lambda d: count(".widget[data-widget]") == 2)  # the shop's (made before) and this one
    made = next(w for w in driver.find_elements(By.CSS_SELECTOR, ".widget[data-widget]")
                if w.find_element(By.CSS_SELECTOR, "input").get_attribute("value") == "https://shop.example")
    snippet = made.find_element(By.CSS_SELECTOR, ".snippet-code").text
    assert snippet == f'<script src="http://gateway.test/chat/widget.js" data-widget="{made.get_attribute("data-widget")}" async></script>'
    assert made.find_element(By.CSS_SELECTOR, "button.copy").is_displayed()
    shot("07-dashboard-widget-snippet")

    # When a shop's page on another origin embeds the widget with its snippet, under its own strict CSP
    driver.get(where["shop"])
    host = wait.until(lambda d: next(iter(d.find_elements(By.ID, "parley-widget")), None))  # a zero-size anchor
    button = find("button", host.shadow_root)
    shot("08-shop-with-widget-button")
    button.click()
    frame = find("iframe", host.shadow_root)
    driver.switch_to.frame(frame)
    # Then the chat opens in the frame with the tenant's name, and an anonymous visitor asks through it
    wait.until(ec.text_to_be_present_in_element((By.ID, "tenant"), "acme"))
    reply = ask("How does hash-checking protect my installs?")
    assert reply.get_attribute("class").split()[:2] == ["msg", "bot"], reply.text
    assert GUIDE.name in reply.find_element(By.CSS_SELECTOR, ".cite").text
    assert not reply.find_elements(By.CSS_SELECTOR, ".cite a")  # a visitor gets no link into the dashboard
    driver.switch_to.default_content()
    shot("09-widget-answer-on-the-shop")
    seen = {"host_storage": driver.execute_script("return JSON.stringify(sessionStorage)"),
            "host_cookie": driver.execute_script("return document.cookie")}

    # And on a phone the widget opens full width
    driver.set_window_size(390, 844)
    wait.until(lambda d: d.execute_script("return window.innerWidth") <= 400)
    assert abs(frame.rect["width"] - driver.execute_script("return window.innerWidth")) <= 2
    shot("10-widget-on-a-phone")
    driver.set_window_size(1366, 1000)

    # When a site the widget does not list embeds the same snippet, the browser refuses to show the chat
    driver.get(where["elsewhere"])
    host = wait.until(lambda d: next(iter(d.find_elements(By.ID, "parley-widget")), None))  # a zero-size anchor
    find("button", host.shadow_root).click()
    driver.switch_to.frame(find("iframe", host.shadow_root))
    wait.until(lambda d: d.execute_script("return location.href").startswith("chrome-error:"))
    driver.switch_to.default_content()
    shot("11-widget-refused-on-another-site")
    return seen
