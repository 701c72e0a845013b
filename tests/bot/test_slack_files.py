"""Files sent in a Slack DM: downloaded with the bot token, checked, stored, queued for indexing;
login pages, Slack Connect stubs, unsupported and oversized files handled with a reason."""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot.channels.downloads import Downloader, DownloadRefused
from bot.channels.slack.channel import SlackChannel
from bot.conversation.schemas import Attachment
from parley.bus import Envelope
from parley.db import unit_of_work
from knowledge.models import Document, Job
from parley.bus.models import OutboxMessage
from tests.bot.conftest import TEAM, Stack, fixture
from tests.bot.file_hosts import FileHost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def file_share(stack: Stack, files: list[dict[str, Any]] | None = None, *, text: str = "") -> dict[str, Any]:
    """Slack's captured file_share delivery, its download links pointed at the local Slack. ``text``
    is what the person wrote with the files: "" (Slack's ``text`` of a file sent alone) unless a test
    sends a question with them (the capture's own is "message message message")."""
    payload = fixture("slack/slack-web__message_file_share.json")
    ts = f"{time.time():.6f}"
    payload["event"].update(ts=ts, event_ts=ts, text=text)
    payload["event_id"] = f"Ev{uuid.uuid4().hex[:10].upper()}"
    if files is not None:
        template = payload["event"]["files"][0]
        payload["event"]["files"] = [{**copy.deepcopy(template), **f} for f in files]
    for f in payload["event"]["files"]:
        for key in ("url_private", "url_private_download"):
            if f.get(key, "").startswith("https://files.slack.com/"):
                f[key] = stack.slack_url.rstrip("/") + f[key].removeprefix("https://files.slack.com")
    return payload


def serve(stack: Stack, payload: dict[str, Any], bodies: dict[str, bytes]) -> None:
    for f in payload["event"]["files"]:
        if f["name"] in bodies:
            path = f["url_private_download"].split("/files-pri/", 1)[1]
            stack.slack.files[path] = (bodies[f["name"]], f.get("mimetype") or "application/octet-stream")


async def _documents(stack: Stack) -> list[Document]:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return list((await session.execute(select(Document).order_by(Document.filename))).scalars())


async def test_a_file_in_a_dm_is_stored_and_queued_with_where_to_report(stack: Stack) -> None:
    # Given Slack's captured DM carrying namenamename.txt (12 bytes: "hug a kitten")
    payload = file_share(stack)
    serve(stack, payload, {"namenamename.txt": b"hug a kitten"})
    # When it arrives
    assert (await stack.post_slack(payload)).status == 200
    await stack.settle()
    # Then the user is told at once, the file was fetched with the bot token, and a document is queued
    [posted] = stack.slack.posted
    assert posted["text"].startswith("received namenamename.txt, indexing")
    [doc] = await _documents(stack)
    assert (doc.status.value, doc.size_bytes, doc.source) == ("queued", 12, "slack")
    assert doc.notify == {"channel": "slack", "team": TEAM, "channel_id": "D0442US94JD", "user": "U043H11ES4V"}
    async with unit_of_work(stack.sessions, admin=True) as session:
        bodies = (await session.execute(select(OutboxMessage.body).where(OutboxMessage.message_type == "document.uploaded"))).scalars()
        assert [Envelope.from_bytes(b).payload["document_id"] for b in bodies] == [doc.id]
    # And a redelivery of the same message changes nothing
    await stack.post_slack(payload, **{"X-Slack-Retry-Num": "1"})
    await stack.settle()
    assert len(stack.slack.posted) == 1 and len(await _documents(stack)) == 1


async def test_login_page_instead_of_the_file_is_not_a_document(stack: Stack) -> None:
    # Given a bot token Slack does not accept for downloads (it answers 200 with its sign-in page)
    stack.slack.file_tokens.clear()
    payload = file_share(stack)
    serve(stack, payload, {"namenamename.txt": b"hug a kitten"})
    # When the file arrives
    await stack.post_slack(payload)
    await stack.settle()
    # Then nothing is stored and the user learns why
    [posted] = stack.slack.posted
    assert "could not take namenamename.txt" in posted["text"] and "web page instead of the file" in posted["text"]
    assert await _documents(stack) == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_slack_connect_stub_is_resolved_with_files_info(stack: Stack) -> None:
    # Given Slack's captured Slack Connect file_share, whose file only says "check_file_info"
    payload = fixture("slack/slack-web__message_file_share_slack_connect.json")
    payload["event_id"] = "Ev0CONNECT1"
    payload["event"]["text"] = ""  # sent alone (with a question, see test_file_questions.py)
    body = b"# Returns\n\nAnything can be returned within 30 days.\n"
    stack.slack.file_info["F12345678"] = {
        "id": "F12345678", "name": "returns.md", "mimetype": "text/markdown", "size": len(body),
        "url_private_download": f"{stack.slack_url.rstrip('/')}/files-pri/{TEAM}-F12345678/download/returns.md",
    }
    stack.slack.files[f"{TEAM}-F12345678/download/returns.md"] = (body, "text/markdown")
    # When it arrives
    await stack.post_slack(payload)
    await stack.settle()
    # Then files.info was asked, and the real file is stored under its real name
    assert stack.slack.calls["files.info"] == 1
    [doc] = await _documents(stack)
    assert doc.filename == "returns.md" and doc.size_bytes == len(body)
    assert stack.slack.posted[0]["text"].startswith("received returns.md")


async def test_unsupported_and_oversized_files_are_explained_without_downloading(stack: Stack) -> None:
    # Given one message with a photo and a PDF over the 64 KB limit of this gateway
    payload = file_share(stack, [
        {"id": "F0PHOTO", "name": "holiday.png", "mimetype": "image/png", "filetype": "png", "size": 2048},
        {"id": "F0BIG", "name": "catalog.pdf", "mimetype": "application/pdf", "filetype": "pdf", "size": 10 * 1024 * 1024},
    ])
    # When it arrives
    await stack.post_slack(payload)
    await stack.settle()
    # Then the user gets one reply that says why for each, and nothing was fetched or stored
    [posted] = stack.slack.posted
    assert "could not take holiday.png" in posted["text"] and "cannot read" in posted["text"]
    assert "could not take catalog.pdf" in posted["text"] and "over the limit" in posted["text"]
    assert stack.slack.downloads == [] and await _documents(stack) == []
    [row] = await stack.messages()
    assert row.status == "answered"


async def test_several_files_in_one_message_become_one_job(stack: Stack) -> None:
    # Given one DM with two documents
    bodies = {"shipping.txt": b"Ships within 2 days.", "returns.txt": b"Returns are accepted for 30 days."}
    payload = file_share(stack, [{"id": f"F0{i}", "name": name, "size": len(body)} for i, (name, body) in enumerate(bodies.items())])
    for f in payload["event"]["files"]:
        f["url_private_download"] = f["url_private_download"].replace("namenamename.txt", f["name"])
    serve(stack, payload, bodies)
    # When it arrives
    await stack.post_slack(payload)
    await stack.settle()
    # Then both are queued as items of one job, and the job (not each file) reports back to the DM
    docs = await _documents(stack)
    assert [d.filename for d in docs] == ["returns.txt", "shipping.txt"]
    assert docs[0].job_id and docs[0].job_id == docs[1].job_id and docs[0].notify is None
    async with unit_of_work(stack.sessions, admin=True) as session:
        job = (await session.execute(select(Job))).scalar_one()
    assert job.total == 2 and job.notify["channel_id"] == "D0442US94JD"
    assert stack.slack.posted[0]["text"].startswith("received shipping.txt, returns.txt, indexing")


async def test_a_file_link_on_another_port_of_the_api_host_never_gets_the_token(stack: Stack) -> None:
    # Given a file_share whose download link is on the Slack API's host (127.0.0.1 here), but on another
    # port, in plain http: a server that would love the workspace's bot token
    other = await FileHost().start()
    other.files["files-pri/T1-F1/download/namenamename.txt"] = (b"hug a kitten", "text/plain")
    payload = file_share(stack)
    for f in payload["event"]["files"]:
        f["url_private"] = f["url_private_download"] = other.url("files-pri/T1-F1/download/namenamename.txt")
    try:
        # When it arrives
        assert (await stack.post_slack(payload)).status == 200
        await stack.settle()
    finally:
        await other.close()
    # Then that server was never asked for anything (so never saw the token), nothing is stored, and the user knows why
    assert other.seen == []
    assert await _documents(stack) == []
    [posted] = stack.slack.posted
    assert posted["text"] == "could not take namenamename.txt: the Slack file link is not https; refusing to fetch it"


async def test_the_token_never_goes_over_http_to_the_api_host(stack: Stack) -> None:
    # Given a Slack channel whose API is https on this host (as https://slack.com/api/ is in production),
    # and a file link to the same host and port in plain http, where a server is listening
    listener = await FileHost().start()
    api = listener.url("api/", host="localhost", scheme="https")
    downloads = Downloader(trusted_urls=[api])
    channel = SlackChannel(client=AsyncWebClient(base_url=api), directory=stack.gw.directory, downloads=downloads)
    link = listener.url("files-pri/T1-F1/download/notes.txt", host="localhost")
    try:
        # When the file is downloaded
        with pytest.raises(DownloadRefused) as refused:
            async with channel.download(tenant_id=stack.tenant_id, route={"team": TEAM},
                                        attachment=Attachment(name="notes.txt", ref={"url": link})):
                pass
    finally:
        await downloads.close()
        await listener.close()
    # Then it is refused before anything is sent: no request, so no token in clear
    assert "not https" in refused.value.message
    assert listener.seen == []
