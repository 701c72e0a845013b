"""The dashboard's documents in a real headless browser, on a real job: the list searched and filtered,
the job report (success first, failures grouped and opening onto their files), a failed PDF's page
and its "retry with password", a document's page with its question, versions and sections, and a
delete from the list. The real gateway, retrieval service, `parley worker documents` process,
RabbitMQ and PostgreSQL. Screenshots go to ``var/screenshots/admin/`` (or ``$PARLEY_SCREENSHOT_DIR``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.bot.conftest import Stack, eventually, start_worker
from tests.bot.test_web import bearer, files
from tests.ingestion.samples import build_pdf, encrypt_pdf
from tests.support import services
from tests.support.browser import Waits, chromium_paths, screenshot_dir, start_chromium

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.shared]

ROOT = Path(__file__).resolve().parents[2]
LOCKED = services.SHARED_DATA / "docs" / "pdf" / "pypdf__libreoffice-writer-password.pdf"  # password "openpassword"
GOOD = {
    "care-guide.md": b"# Care guide\n\nWash the merino jumper cold and dry it flat.\n\n## Ironing\n\nLow heat, inside out.\n",
    "returns.md": b"# Returns\n\nReturn any item within 30 days for a full refund.\n",
    "sizes.md": b"# Sizes\n\nOur jumpers run small: order one size up.\n",
    "shipping.md": b"# Shipping\n\nOrders leave Leipzig within two business days.\n",
    "hours.md": b"# Hours\n\nThe shop is open Monday to Friday, 9 to 17.\n",
}
BLANK = {"notes.txt": b"   \n\n  \n", "empty-draft.txt": b"\n\t\n"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_documents_job_report_and_document_pages_in_a_browser(
        stack: Stack, worker_processes: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chromium_paths()
    if not LOCKED.exists():
        pytest.skip(f"../shared/data is missing (looked for {LOCKED}); this test needs its encrypted PDF")
    log = tmp_path / "worker.log"
    worker_processes.append(start_worker(stack, log))
    # Given one upload of eight files: five good, two without text, one password-protected PDF
    items = [(n, b, "text/markdown") for n, b in GOOD.items()] + [(n, b, "text/plain") for n, b in BLANK.items()]
    items.append((LOCKED.name, LOCKED.read_bytes(), "application/pdf"))
    response = await stack.client.post("/api/documents", data=files(*items), headers=bearer(stack.api_key))
    assert response.status == 202, await response.text()
    uploaded = await response.json()
    ids = {d["filename"]: d["id"] for d in uploaded["documents"]}

    async def job_done() -> dict[str, Any] | None:
        job = await (await stack.client.get(f"/api/jobs/{uploaded['job_id']}", headers=bearer(stack.api_key))).json()
        return job if job["status"] == "done" else None
    job = await eventually(job_done, timeout=200, interval=0.25, log=lambda: log.read_text()[-3000:])
    assert job["report"].startswith("5 of 8 indexed; 3 failed: document has no text (2), PDF is password-protected (1)")
    # And a question answered from the care guide
    asked = await stack.client.post("/api/chat", json={"message": "How should I wash the merino jumper?"},
                                    headers=bearer(stack.api_key))
    assert asked.status == 200, await asked.text()
    assert any(c["document_id"] == ids["care-guide.md"] for c in (await asked.json())["citations"])

    # And, on the person's disk, a PDF protected by a password they know
    warranty = tmp_path / "warranty.pdf"
    warranty.write_bytes(encrypt_pdf(build_pdf([["The warranty lasts three years."]]), user_password="w4rranty-Pw"))

    shots = screenshot_dir(ROOT / "var" / "screenshots" / "admin")
    driver = await asyncio.to_thread(start_chromium)
    try:
        await asyncio.to_thread(_walk, driver, str(stack.client.make_url("")).rstrip("/"), stack.api_key, ids, shots, warranty)
    except Exception:
        await asyncio.to_thread(driver.save_screenshot, str(shots / "failure-documents.png"))
        raise
    finally:
        await asyncio.to_thread(driver.quit)
    with capsys.disabled():
        print(f"\ndocument pages screenshots: {shots}/1[1-6]-*.png")


def _walk(driver: Any, base: str, api_key: str, ids: dict[str, str], shots: Path, warranty: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select

    page = Waits(driver)
    wait, find, text, click = page.wait, page.find, page.text, page.click

    def refreshed() -> None:
        """Wait for the page's next refresh (its footer says when it last updated)."""
        before = driver.find_element(By.ID, "live").text
        wait.until(lambda d: d.find_element(By.ID, "live").text not in (before, ""))

    def rows(css: str = "#documents-body tr") -> list[str]:
        return [e.get_attribute("data-filename") for e in driver.find_elements(By.CSS_SELECTOR, css)]

    def shot(name: str, *, whole: bool = False) -> None:
        """A screenshot of the window, or of the whole page (the window stretched to its height)."""
        if whole:
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1366, min(4000, max(1000, int(height) + 40)))
        driver.save_screenshot(str(shots / f"{name}.png"))
        if whole:
            driver.set_window_size(1366, 1000)

    # When the person signs in, the documents page lists all eight
    driver.get(f"{base}/admin/documents")
    find("#api_key").send_keys(api_key)
    click("#login-form button")
    wait.until(ec.url_to_be(f"{base}/admin/documents"))
    wait.until(lambda d: len(rows()) == 8)
    assert text("#doc-range") == "1–8 of 8"
    # When they search by name, only the matching document stays
    find("#doc-search").send_keys("CARE")
    wait.until(lambda d: rows() == ["care-guide.md"])
    wait.until(ec.url_contains("q=CARE"))  # kept in the address, for the back button and sharing
    find("#doc-search").clear()
    find("#doc-search").send_keys(" ")  # an input event: back to everything
    wait.until(lambda d: len(rows()) == 8)
    # When they filter by "failed", the three failures remain, each with its reason
    Select(find("#doc-status")).select_by_value("failed")
    wait.until(lambda d: sorted(rows()) == sorted([*BLANK, LOCKED.name]))
    assert "password" in text(f'tr[data-filename="{LOCKED.name}"] .reason').lower()
    shot("11-documents-filtered")

    # When they open the jobs page, the report leads with the success and groups the failures
    driver.get(f"{base}/admin/jobs")
    report = '#jobs-body tr[data-status="done"] .job-report'
    assert text(report + " .headline") == "5 of 8 indexed"
    assert "3 failed, for 2 reasons" in text(report + " .failed-line")
    click(report + ' details[data-code="no_text"] summary')
    find(report + ' details[data-code="no_text"][open] ul.files a')
    links = driver.find_elements(By.CSS_SELECTOR, report + ' details[data-code="no_text"] ul.files a')
    assert sorted(a.text for a in links) == sorted(BLANK)
    assert {a.get_attribute("href") for a in links} == {f"{base}/admin/documents/{ids[n]}" for n in BLANK}
    click(report + ' details[data-code="pdf_encrypted"] summary')
    find(report + ' details[data-code="pdf_encrypted"][open] ul.files a')
    refreshed()  # the page redraws the report: the groups stay open
    find(report + ' details[data-code="no_text"][open] ul.files a')
    shot("12-job-report")
    # When they follow the PDF's link, its page says why it failed and offers the retry with password
    click(report + f' details[data-code="pdf_encrypted"] a[href="/admin/documents/{ids[LOCKED.name]}"]')
    wait.until(ec.url_to_be(f"{base}/admin/documents/{ids[LOCKED.name]}"))
    find('[data-view="document"][data-status="failed"]')
    assert text("#doc-title") == LOCKED.name and "password-protected" in text("#doc-facts")
    find("#retry-form")
    assert "5 of 8 indexed" in text('#doc-jobs-body tr[data-item-status="failed"]')
    shot("13-document-failed", whole=True)
    find("#retry-password").send_keys("openpassword")
    click("#retry-form button")
    # Then it is indexed with its password, shows its sections, and the retry is in its history
    find('[data-view="document"][data-status="indexed"]')
    assert "Lorem ipsum" in text("#doc-chunks li .chunk-text")
    assert "retried with a password" in text('#doc-history-body tr[data-action="uploaded"]')
    assert not driver.find_element(By.ID, "retry-form").is_displayed()
    shot("14-document-retried", whole=True)

    # When they open the care guide's page, it shows the question it answered, its job and its sections
    driver.get(f"{base}/admin/documents/{ids['care-guide.md']}")
    assert "wash the merino jumper" in text("#doc-questions-body tr").lower()
    assert "5 of 8 indexed" in text('#doc-jobs-body tr[data-item-status="done"]')
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#doc-chunks li")) >= 1)
    assert "this version" in text("#versions-body tr.this")
    shot("15-document-page", whole=True)

    # When they delete a document from the list (the button asks once more), it leaves the list
    driver.get(f"{base}/admin/documents?q=hours")
    wait.until(lambda d: rows() == ["hours.md"])
    click('tr[data-filename="hours.md"] button.delete')
    assert text('tr[data-filename="hours.md"] button.delete') == "Really delete?"
    refreshed()  # a refresh redraws the row...
    assert text('tr[data-filename="hours.md"] button.delete') == "Really delete?"  # ...and the question stays
    click('tr[data-filename="hours.md"] button.delete')
    wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "hours.md deleted"))
    wait.until(lambda d: rows() == [])
    Select(find("#doc-status")).select_by_value("deleted")
    wait.until(lambda d: rows() == ["hours.md"])
    shot("16-document-deleted")

    # When they upload the protected PDF with its password from the documents page
    Select(find("#doc-status")).select_by_value("")
    find("#doc-search").clear()
    find("#doc-search").send_keys("warranty")
    find("#upload-files").send_keys(str(warranty))
    find("#upload-password").send_keys("w4rranty-Pw")
    click("#upload-form button")
    wait.until(ec.text_to_be_present_in_element((By.ID, "upload-msg"), "Received warranty.pdf"))
    # Then it is indexed (the password went with it), and the form forgot the password
    find('tr[data-filename="warranty.pdf"][data-status="indexed"]')
    assert find("#upload-password").get_attribute("value") == ""
