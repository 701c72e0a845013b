"""The admin dashboard in a real headless browser, end to end.

The real gateway app (on a free port), the real retrieval app, a real `parley worker documents`
process, real RabbitMQ and PostgreSQL. A person signs in with the tenant's API key, uploads a
document and an encrypted PDF, watches one become indexed and the other fail with its reason,
follows the job's progress, asks in the web chat and gets a cited answer, finds the PDF's dead letter
with what to do instead of a replay that cannot help, and looks at channels and conversations. A screenshot of every page is written to
``var/screenshots/admin/`` (or ``$PARLEY_SCREENSHOT_DIR``) and the folder is printed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from parley.db import unit_of_work
from knowledge.models import Document
from parley.bus.models import OutboxMessage
from tenants import service as tenants
from tenants.models import ChannelKind
from tests.bot.conftest import Stack, dm
from tests.support import services
from tests.support.browser import chromium_paths, screenshot_dir, start_chromium
from tests.support.processes import stop_process

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.shared]

ROOT = Path(__file__).resolve().parents[2]
DOCS = services.SHARED_DATA / "docs"
GUIDE = DOCS / "md" / "pip-doc__topics_repeatable-installs.md"
LOCKED = DOCS / "pdf" / "pypdf__encrypted-file.pdf"  # encrypted (user password "test"): fails for good


@pytest.fixture
def shared_files() -> tuple[Path, Path]:
    if not (GUIDE.exists() and LOCKED.exists()):
        pytest.skip(f"../shared/data is missing (looked for {GUIDE} and {LOCKED}); the browser test needs its documents")
    return GUIDE, LOCKED


@pytest.fixture
async def e2e(make_stack: Callable[..., Awaitable[Stack]], db_url: str, shared_files: Any, tmp_path: Path) -> Any:
    chromium_paths()  # skip before starting anything when there is no browser
    stack = await make_stack()
    driver = await asyncio.to_thread(start_chromium)
    yield stack, driver
    await asyncio.to_thread(driver.quit)


@pytest.fixture
def worker(e2e: Any, db_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The real document worker process, on the gateway's database, data folder and broker prefix."""
    stack, _ = e2e
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=db_url, PARLEY_DATA_DIR=str(stack.settings.data_dir), PARLEY_AMQP_URL=services.AMQP_URL,
               PARLEY_AMQP_PREFIX=stack.settings.amqp_prefix, PARLEY_MAX_ATTEMPTS="2", PARLEY_LOG_JSON="true")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cli", "worker", "documents"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            yield process
        finally:
            stop_process(process, timeout=60)
    assert process.returncode == 0, log_path.read_text()[-3000:]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_dashboard_end_to_end_in_a_browser(e2e: Any, worker: Any, shared_files: tuple[Path, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    stack, driver = e2e
    guide, locked = shared_files
    # Given a Slack DM already answered and a Shopify store connected (for the channels page)
    await stack.post_slack(dm("What is your returns policy?"))
    await stack.settle()
    async with unit_of_work(stack.sessions, admin=True) as session:
        await tenants.install_channel(session, box=stack.gw.box, tenant_id=stack.tenant_id, kind=ChannelKind.shopify,
                                      external_id="acme-outdoor.myshopify.com", display_name="Acme Outdoor",
                                      details={"shop_name": "Acme Outdoor", "currency": "EUR", "scopes": ["read_products"]},
                                      secrets={"access_token": "shpat_test"})
    shots = screenshot_dir(ROOT / "var" / "screenshots" / "admin")
    for old in [*shots.glob("*.png"), *shots.glob("failure.html")]:
        old.unlink()
    base = str(stack.client.make_url("")).rstrip("/")
    started = time.monotonic()
    # When a person goes through the dashboard (Selenium blocks: it runs in a thread while this
    # loop serves the gateway)
    try:
        await asyncio.to_thread(_walk_through, driver, base, stack.api_key, guide, locked, shots)
    except Exception:
        await asyncio.to_thread(driver.save_screenshot, str(shots / "failure.png"))
        (shots / "failure.html").write_text(await asyncio.to_thread(lambda: driver.page_source))
        with capsys.disabled():
            print(f"\nthe browser test failed; its last page is in {shots}/failure.png and failure.html")
            await _print_state(stack)
        raise
    with capsys.disabled():
        print(f"\nadmin dashboard screenshots ({time.monotonic() - started:.1f}s in the browser): {shots}")
    assert len(list(shots.glob("*.png"))) >= 9


async def _print_state(stack: Stack) -> None:
    """What the server side looked like when the browser gave up (documents and their messages)."""
    async with unit_of_work(stack.sessions, admin=True) as session:
        for d in (await session.execute(select(Document))).scalars():
            print(f"document {d.filename}: {d.status.value} {d.error or ''}")
        for o in (await session.execute(select(OutboxMessage))).scalars():
            print(f"outbox {o.message_type} -> {o.routing_key}: published {o.published_at} ({o.publish_attempts} tries)")
    print(f"gateway broker connected: {stack.gw.broker.is_connected}")


def _walk_through(driver: Any, base: str, api_key: str, guide: Path, locked: Path, shots: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # Generous bounds for a loaded machine (the worker loads its model first); never a measurement.
    wait = WebDriverWait(driver, 90, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])

    def find(css: str) -> Any:
        return wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def text(css: str) -> str:
        """The text of the first visible match, read again if a refresh replaced it meanwhile."""
        return wait.until(lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None))

    def click(css: str) -> None:
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, css)))
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)

    def shot(name: str) -> None:
        driver.save_screenshot(str(shots / f"{name}.png"))

    def nav(page: str) -> None:
        click(f'#nav a[data-page="{page}"]')
        wait.until(ec.url_to_be(f"{base}/admin/{page}"))
        find(f'[data-view="{page}"] h1')

    # Then opening the dashboard asks for a key; a wrong key is refused, the tenant's key gets in
    driver.get(f"{base}/admin/documents")
    wait.until(ec.url_contains("/admin/login"))
    find("#api_key").send_keys("pk_wrong-key")
    shot("01-login")
    click("#login-form button")
    assert "Unknown or revoked" in text("#login-error")
    find("#api_key").send_keys(api_key)
    click("#login-form button")
    wait.until(ec.url_to_be(f"{base}/admin/documents"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "tenant"), "acme"))
    assert "parley_admin" not in driver.execute_script("return document.cookie")  # HttpOnly: out of the script's reach

    # When the guide and the encrypted PDF are uploaded from the documents page
    find("#upload-files").send_keys(f"{guide}\n{locked}")
    click("#upload-form button")
    wait.until(ec.text_to_be_present_in_element((By.ID, "upload-msg"), "Received"))
    # Then the page shows the guide indexed and the PDF failed with its reason, without a reload
    find(f'tr[data-filename="{guide.name}"][data-status="indexed"]')
    assert "password" in text(f'tr[data-filename="{locked.name}"][data-status="failed"] .reason').lower()
    shot("02-documents")

    # And the job's progress shows 1 done and 1 failed of 2, with the report
    nav("jobs")
    row = text('tr[data-status="done"][data-done="1"][data-failed="1"][data-total="2"] .job-report')
    assert row.startswith("1 of 2 indexed") and "1 failed" in row  # success first, then the failures grouped
    shot("03-jobs")

    # When a question is asked in the web chat, the answer cites the uploaded guide
    nav("chat")
    find("#question").send_keys("How does hash-checking protect my installs?")
    click("#ask")
    answer = text(".msg.answer, .msg.err")
    assert "Sources:" in answer and guide.name in answer, answer
    shot("04-ask")

    # When the dead-letter page is opened, the PDF's dead letter is there with its reason
    nav("dead-letters")
    row = text('#dead-letters-body tr[data-status="dead"]')
    assert "password" in row.lower() and locked.name in row
    # Then no replay is offered for it (the same file would fail the same way): the row says what to do
    assert "Replaying cannot help" in row and "give the password" in row, row
    assert not driver.find_elements(By.CSS_SELECTOR, "#dead-letters-body button.replay")
    shot("05-dead-letters")
    # And the full list (replayed ones too) holds nothing replayed: nothing was replayed in vain
    click("#dlq-all")
    assert not driver.find_elements(By.CSS_SELECTOR, '#dead-letters-body tr[data-status="replayed"]')
    shot("06-dead-letters-all")

    # And the channels page shows the Slack, Instagram and Shopify installations and their health
    nav("channels")
    assert "direct message" in text('article[data-kind="slack"][data-health="ok"]')
    find('article[data-kind="instagram"]')
    find('article[data-kind="shopify"][data-health="idle"]')
    shot("07-channels")

    # And the conversations page lists the Slack DM and the web question with their answer times
    nav("conversations")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#conversations-body tr[data-status="answered"]')) >= 2)
    assert text('[data-stat="median answer"] .v').endswith(("ms", " s"))
    shot("08-conversations")

    # And the plain web chat page answers the same way, in the dashboard's session (no key asked again)
    driver.get(f"{base}/chat")
    find("#question").send_keys("What is hash-checking mode?")
    click("#send")
    assert guide.name in text(".msg.bot .cite")
    shot("09-web-chat")

    # When the person logs out, the dashboard asks for the key again
    driver.get(f"{base}/admin/documents")
    click("#logout")
    wait.until(ec.url_contains("/admin/login"))
    driver.get(f"{base}/admin/jobs")
    wait.until(ec.url_contains("/admin/login?next=/admin/jobs"))
