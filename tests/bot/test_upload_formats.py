"""What the gateway's upload doors accept comes from one registry (`parley.formats`): the built-in
formats plus those of the parser plugins in PARLEY_PARSER_PLUGINS, loaded when the app is created.
A plugin's format is accepted in the web chat, a Slack DM and the admin dashboard, offered by the
pages' file pickers, and indexed by a real document worker that loads the same plugin; a format no
one registered is refused as before."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from sqlalchemy import select

from knowledge.models import Chunk, Document
from parley.db import unit_of_work
from tests.bot.conftest import Stack, eventually, start_worker
from tests.bot.test_admin import Browser
from tests.bot.test_slack_files import file_share, serve
from tests.support.plugins import NOTE_LABEL, NOTE_MIME, write_note_plugin

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

NOTES = b"Opening hours: Monday to Friday, 9:00 to 17:00.\nReturns: within 30 days, with the receipt.\n"
TODAY = "PDF, Word (.docx), text, Markdown and HTML (or a .zip of them)"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def one_file(name: str, body: bytes, content_type: str) -> FormData:
    form = FormData()
    form.add_field("file", body, filename=name, content_type=content_type)
    return form


def accepted_by_picker(page: str) -> list[str]:
    """The formats every file picker on the page offers (a page may have several: the dashboard has
    one for new uploads and one for a new version of a document)."""
    pickers = [set(accept.split(",")) for accept in re.findall(r'accept="([^"]*)"', page)]
    assert pickers, "the page has no file picker"
    return sorted(set.intersection(*pickers))


@pytest.fixture
def note_plugin(tmp_path: Path) -> Path:
    return write_note_plugin(tmp_path / "plugins")


async def _documents(stack: Stack) -> dict[str, Document]:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return {d.filename: d for d in (await session.execute(select(Document))).scalars()}


async def test_a_plugin_format_is_accepted_at_every_upload_door(make_stack: Any, note_plugin: Path) -> None:
    # Given a gateway whose settings name a parser plugin that adds .note files
    stack: Stack = await make_stack(settings_update={"parser_plugins": str(note_plugin)})
    # When a note is uploaded in the web chat (declared as raw bytes, as browsers do for unknown types)
    web = await stack.client.post("/api/documents", data=one_file("hours.note", NOTES, "application/octet-stream"),
                                  headers=bearer(stack.api_key))
    # And another is sent in a Slack DM (each door's note is a different file: the same bytes are one document)
    slack_note = NOTES + b"Sent: in Slack.\n"
    payload = file_share(stack, [{"id": "F0NOTE", "name": "returns.note", "mimetype": "application/octet-stream",
                                  "filetype": "binary", "size": len(slack_note)}])
    payload["event"]["files"][0]["url_private_download"] = payload["event"]["files"][0]["url_private_download"].replace(
        "namenamename.txt", "returns.note")
    serve(stack, payload, {"returns.note": slack_note})
    assert (await stack.post_slack(payload)).status == 200
    await stack.settle()
    # And a third through the admin dashboard
    admin = await Browser(stack).signed_in(stack.api_key)
    try:
        dashboard_note = one_file("faq.note", NOTES + b"Sent: from the dashboard.\n", "text/plain")
        dashboard = await admin.request("POST", "/admin/api/documents", data=dashboard_note)
        dashboard_page = await (await admin.request("GET", "/admin/documents")).text()
    finally:
        await admin.close()
    # Then each door took its file, queued to be read as the plugin's format
    assert web.status == 202, await web.text()
    assert dashboard.status == 202, await dashboard.text()
    assert stack.slack.posted[0]["text"].startswith("received returns.note, indexing")
    docs = await _documents(stack)
    assert {name: (d.status.value, d.mime_type) for name, d in docs.items()} == {
        name: ("queued", NOTE_MIME) for name in ("hours.note", "returns.note", "faq.note")}
    # And the file pickers of the chat page and the dashboard offer .note files besides the built-in ones
    chat_page = await (await stack.client.get("/chat")).text()
    for page in (chat_page, dashboard_page):
        assert {".note", ".pdf", ".docx", ".md", ".txt", ".html"} <= set(accepted_by_picker(page))
    # And what is still refused names the plugin's format among what to send
    image = await stack.client.post("/api/documents", data=one_file("cat.png", b"\x89PNG\r\n\x1a\n", "image/png"),
                                    headers=bearer(stack.api_key))
    assert image.status == 415
    assert (await image.json())["detail"] == (
        f"cat.png is image/png, which I cannot read; send PDF, Word (.docx), text, Markdown, HTML and {NOTE_LABEL} "
        "(or a .zip of them)")


async def test_without_the_plugin_its_format_is_refused_as_before(stack: Stack) -> None:
    # When a gateway with no parser plugin gets a note and an image
    note = await stack.client.post("/api/documents", data=one_file("hours.note", NOTES, "application/octet-stream"),
                                   headers=bearer(stack.api_key))
    image = await stack.client.post("/api/documents", data=one_file("cat.png", b"\x89PNG\r\n\x1a\n", "image/png"),
                                    headers=bearer(stack.api_key))
    # Then both are refused with the message of the built-in formats, and nothing is stored
    assert (note.status, image.status) == (415, 415)
    assert (await note.json())["detail"] == f"hours.note is application/octet-stream, which I cannot read; send {TODAY}"
    assert (await image.json())["detail"] == f"cat.png is image/png, which I cannot read; send {TODAY}"
    assert await _documents(stack) == {}
    # And the chat page's picker does not offer .note files
    assert ".note" not in accepted_by_picker(await (await stack.client.get("/chat")).text())


async def test_the_document_worker_indexes_what_the_gateway_accepted(make_stack: Any, worker_processes: Any,
                                                                     note_plugin: Path, tmp_path: Path) -> None:
    # Given a gateway and a real document worker, both configured with the note plugin
    plugins = {"parser_plugins": str(note_plugin)}
    stack: Stack = await make_stack(settings_update=plugins)
    worker_processes.append(start_worker(stack, tmp_path / "worker.log", PARLEY_PARSER_PLUGINS=str(note_plugin)))
    # When a note is uploaded in the web chat
    uploaded = await (await stack.client.post(
        "/api/documents", data=one_file("hours.note", NOTES, "application/octet-stream"), headers=bearer(stack.api_key))).json()
    [document] = uploaded["documents"]

    # Then the worker indexes it, read by the plugin's parser: one section under each topic
    async def indexed() -> dict[str, Any] | None:
        body = await (await stack.client.get(f"/api/documents/{document['id']}", headers=bearer(stack.api_key))).json()
        return body if body["status"] in ("indexed", "failed") else None

    done = await eventually(indexed, timeout=120, interval=0.2)
    assert done["status"] == "indexed", (done, (tmp_path / "worker.log").read_text()[-2000:])
    async with unit_of_work(stack.sessions, admin=True) as session:
        row = await session.get(Document, document["id"])
        chunks = (await session.execute(select(Chunk).where(Chunk.document_id == document["id"]))).scalars().all()
    assert row.mime_type == NOTE_MIME
    assert {tuple(c.heading_path) for c in chunks} == {("Opening hours",), ("Returns",)}
    assert worker_processes[0].poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
