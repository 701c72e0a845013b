"""The dashboard's Webhooks page in a real headless browser: a person adds an endpoint for two
events, copies the secret shown once, sends a test that the real webhooks consumer (on the
gateway's RabbitMQ) delivers to a local receiver, reads the delivery log, disables and enables
the endpoint, rotates its secret and removes it. Screenshots go to ``var/screenshots/admin/``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from parley.bus import consuming
from parley.webhook_signing import verify
from tests.bot.conftest import Stack, eventually
from tests.support.browser import Waits, chromium_paths, screenshot_dir, start_chromium
from tests.webhooks.conftest import receiver  # noqa: F401 - the fixture
from tests.webhooks.conftest import Receiver
from webhooks.consumer import WebhookDeps, webhooks_consumer
from webhooks.delivery import client_session

pytestmark = [pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_webhooks_page_in_a_browser(make_stack: Callable[..., Awaitable[Stack]], receiver: Receiver,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    chromium_paths()
    stack = await make_stack(settings_update={"webhooks_allow_private": True})
    http = client_session(allow_private=True)
    deps = WebhookDeps.from_settings(stack.settings, sessions=stack.sessions, http=http,
                                     tiers=stack.gw.broker.topology.delays)
    shots = screenshot_dir(ROOT / "var" / "screenshots" / "admin")
    driver = await asyncio.to_thread(start_chromium)
    base = str(stack.client.make_url("")).rstrip("/")
    try:
        await eventually(lambda: stack.gw.bus_ready.is_set(), what="the gateway's broker")
        async with consuming(webhooks_consumer(deps, stack.gw.broker), shutdown_timeout=2.0):
            secret = await asyncio.to_thread(_add, driver, base, stack.api_key, receiver.url, shots)
            # Then the test delivery reached the receiver, signed with the secret the page showed
            await eventually(lambda: receiver.requests, what="the test delivery")
            verify(secret, receiver.requests[0]["headers"], receiver.requests[0]["body"])
            assert receiver.bodies()[0]["type"] == "webhook.test"
            await asyncio.to_thread(_log_and_manage, driver, shots)
    except Exception:
        await asyncio.to_thread(driver.save_screenshot, str(shots / "failure-webhooks.png"))
        raise
    finally:
        await asyncio.to_thread(driver.quit)
        await http.close()
    with capsys.disabled():
        print(f"\nwebhooks page screenshots: {shots}/3[0-2]-webhooks*.png")


def _add(driver: Any, base: str, api_key: str, url: str, shots: Path) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    page = Waits(driver)
    wait, find, click = page.wait, page.find, page.click
    # When the person signs in and opens the Webhooks page
    driver.get(f"{base}/admin/webhooks")
    find("#api_key").send_keys(api_key)
    click("#login-form button")
    wait.until(ec.url_to_be(f"{base}/admin/webhooks"))
    find("#wh-endpoints-empty")
    # And adds the receiver for two events
    find("#wh-url").send_keys(url)
    click('input[name="wh-event"][value="document.indexed"]')
    click('input[name="wh-event"][value="job.completed"]')
    click("#wh-add")
    # Then the secret is shown once, and the endpoint listed with its events
    secret = page.text("#wh-secret")
    assert secret.startswith("whsec_")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#wh-endpoints-body tr")) == 1)
    assert page.text("#wh-endpoints-body tr td:nth-child(2)") == "document.indexed, job.completed"
    driver.save_screenshot(str(shots / "30-webhooks-secret.png"))
    click("#wh-secret-done")
    wait.until(lambda d: not d.find_element(By.ID, "wh-secret-card").is_displayed())
    assert driver.find_element(By.ID, "wh-secret").text == ""  # not left in the page
    # When they send a test
    click('#wh-endpoints-body button[data-action="test"]')
    return secret


def _log_and_manage(driver: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    page = Waits(driver)
    wait, click = page.wait, page.click
    # Then the delivery log shows it delivered, with the receiver's answer
    wait.until(lambda d: any(e.text == "delivered" for e in d.find_elements(By.CSS_SELECTOR, "#wh-log-body .badge")))
    assert "webhook.test" in page.text("#wh-log-body tr")
    driver.save_screenshot(str(shots / "31-webhooks-log.png"))
    # When they disable it / Then it says so; enable brings it back
    click('#wh-endpoints-body button[data-action="disable"]')
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '#wh-endpoints-body [data-status]').text == "disabled")
    click('#wh-endpoints-body button[data-action="enable"]')
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '#wh-endpoints-body [data-status]').text == "enabled")
    # When they rotate the secret / Then a new one is shown, with how long the old one still signs
    click('#wh-endpoints-body button[data-action="rotate"]')
    assert page.text("#wh-secret").startswith("whsec_")
    assert "The previous secret signs too until" in page.text("#wh-secret-note")
    driver.save_screenshot(str(shots / "32-webhooks-rotated.png"))
    click("#wh-secret-done")
    # When they remove it (confirming) / Then the list is empty again
    click('#wh-endpoints-body button[data-action="remove"]')
    wait.until(lambda d: d.switch_to.alert) .accept()
    page.find("#wh-endpoints-empty")
