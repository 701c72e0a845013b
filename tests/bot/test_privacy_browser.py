"""The dashboard's Privacy page in a real headless browser: a person reads and changes the retention
settings, previews the erasure of one customer (nothing goes), confirms it, and reads what went;
the customer's messages are then nowhere in the database. Screenshots go to ``var/screenshots/admin/``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from parley.db import unit_of_work
from tenants.retention import get_retention
from tests.bot.conftest import Stack, dm
from tests.bot.privacy_seed import rows_containing
from tests.support.browser import Waits, chromium_paths, screenshot_dir, start_chromium

pytestmark = [pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]
CAROL, MARK = "UCAROL0001", "carolbadger3390"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_privacy_page_in_a_browser(make_stack: Callable[..., Awaitable[Stack]]) -> None:
    chromium_paths()
    stack = await make_stack()
    # Given a customer who asked in a DM
    payload = dm(f"Where is my order {MARK}?")
    payload["event"].update(user=CAROL, channel=f"D{CAROL}")
    assert (await stack.post_slack(payload)).status == 200
    await stack.settle()
    shots = screenshot_dir(ROOT / "var" / "screenshots" / "admin")
    driver = await asyncio.to_thread(start_chromium)
    base = str(stack.client.make_url("")).rstrip("/")
    try:
        await asyncio.to_thread(_settings, driver, base, stack.api_key, shots)
        async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
            saved = await get_retention(session, tenant_id=stack.tenant_id, settings=stack.settings)
        assert (saved.transcript_days, saved.raw_files) == (45, "delete")
        await asyncio.to_thread(_preview, driver, shots)
        async with unit_of_work(stack.sessions, admin=True) as session:
            assert "inbound_message" in await rows_containing(session, MARK)  # a preview removes nothing
        await asyncio.to_thread(_erase, driver, shots)
        async with unit_of_work(stack.sessions, admin=True) as session:
            assert await rows_containing(session, MARK) == {} and await rows_containing(session, CAROL) == {}
    except Exception:
        await asyncio.to_thread(driver.save_screenshot, str(shots / "failure-privacy.png"))
        raise
    finally:
        await asyncio.to_thread(driver.quit)


def _settings(driver: Any, base: str, api_key: str, shots: Path) -> None:
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    page = Waits(driver)
    # When the person signs in and opens the Privacy page
    driver.get(f"{base}/admin/privacy")
    page.find("#api_key").send_keys(api_key)
    page.click("#login-form button")
    page.wait.until(ec.url_to_be(f"{base}/admin/privacy"))
    # Then the settings say what is kept, and that they are the platform's defaults
    assert "kept for ever (platform default)" in page.text('#retention-now dd[data-setting="transcript_days"]')
    # When they keep transcripts 45 days and only chunks of uploaded files
    days = page.find("#retention-transcript-days")
    days.clear()
    days.send_keys("45")
    Select(page.find("#retention-raw-files")).select_by_value("delete")
    page.click("#retention-form button")
    # Then the page says the new values are this workspace's own
    page.wait.until(lambda d: "45 days (set for this workspace)" in
                    d.find_element("css selector", '#retention-now dd[data-setting="transcript_days"]').text)
    assert "Retention settings saved" in page.text("#flash")
    # And the one they left alone still follows the platform default
    assert "(platform default)" in page.text('#retention-now dd[data-setting="dead_letter_days"]')
    driver.save_screenshot(str(shots / "40-privacy-retention.png"))


def _preview(driver: Any, shots: Path) -> None:
    page = Waits(driver)
    # When they preview erasing a customer typed without a channel: refused with the form to use
    page.find("#erasure-customer").send_keys("UCAROL0001")
    page.click("#erasure-form button")
    assert "<channel>:<id>" in page.text("#flash")
    # When they preview erasing slack:UCAROL0001
    field = page.find("#erasure-customer")
    field.clear()
    field.send_keys(f"slack:{CAROL}")
    page.click("#erasure-form button")
    # Then the page lists what would go, and offers to erase it
    assert page.text("#erasure-title") == f"Would remove, for slack:{CAROL}"
    assert page.text('#erasure-body tr[data-kind="messages"] td.num') == "1"
    page.find("#erasure-confirm")
    driver.save_screenshot(str(shots / "41-privacy-preview.png"))


def _erase(driver: Any, shots: Path) -> None:
    page = Waits(driver)
    # When they confirm
    page.click("#erasure-confirm")
    page.wait.until(lambda d: d.switch_to.alert).accept()
    # Then the page says what was removed, and offers nothing more to erase
    page.wait.until(lambda d: d.find_element("id", "erasure-title").text == f"Removed, for slack:{CAROL}")
    assert "was erased" in page.text("#flash")
    assert not driver.find_element("id", "erasure-confirm").is_displayed()
    driver.save_screenshot(str(shots / "42-privacy-erased.png"))
