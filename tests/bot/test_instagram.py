"""Instagram Messaging through the real gateway: verification, signatures, batches, echoes and
receipts, duplicate mids, long answers split for the Send API, the 24-hour window, documents."""

from __future__ import annotations

import copy
import json
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from bot.channels.instagram.channel import split_message
from parley.db import unit_of_work
from knowledge.models import Document
from tests.bot.conftest import IG_ACCOUNT, IG_UPLOADER, META_SECRET, Stack, fixture, meta_headers
from tests.bot.file_hosts import FileHost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def text_event(text: str, sender: str = "IGSID-CUSTOMER-1", *, mid: str | None = None, age_ms: int = 0) -> dict[str, Any]:
    """One messaging item shaped like Meta's documented text webhook, for our account, sent now."""
    template = fixture("instagram/meta-docs__instagram_messages__text_template.json")["entry"][0]["messaging"][0]
    event = copy.deepcopy(template)
    event["sender"]["id"], event["recipient"]["id"] = sender, IG_ACCOUNT
    event["timestamp"] = int(time.time() * 1000) - age_ms
    event["message"].update(mid=mid or f"aWdfZAG1{uuid.uuid4().hex}", text=text)
    return event


def envelope(*entries: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"object": "instagram", "entry": [{"id": account, "time": int(time.time() * 1000), "messaging": items}
                                             for account, items in entries]}


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_subscription_verification(stack: Stack) -> None:
    # Given Meta's verification request with our verify token, and two that are not
    ok = await stack.client.get("/instagram/webhook", params={"hub.mode": "subscribe", "hub.verify_token": "verify-me",
                                                              "hub.challenge": "1158201444"})
    wrong = await stack.client.get("/instagram/webhook", params={"hub.mode": "subscribe", "hub.verify_token": "nope",
                                                                 "hub.challenge": "1"})
    no_mode = await stack.client.get("/instagram/webhook", params={"hub.verify_token": "verify-me", "hub.challenge": "1"})
    # Then only the first gets its challenge back, as plain text
    assert ok.status == 200 and await ok.text() == "1158201444" and ok.content_type == "text/plain"
    assert (wrong.status, no_mode.status) == (403, 403)


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_signatures_are_checked_on_the_raw_body_with_either_secret(stack: Stack) -> None:
    payload = envelope((IG_ACCOUNT, [text_event("Hello?")]))
    body = json.dumps(payload).encode()
    # When the batch is signed with a wrong secret, unsigned, or its body altered after signing
    wrong = await stack.post_instagram(payload, secret="not-the-secret")
    unsigned = await stack.client.post("/instagram/webhook", data=body, headers={"Content-Type": "application/json"})
    altered = await stack.client.post("/instagram/webhook", data=body.replace(b"Hello", b"Hallo"), headers=meta_headers(body))
    malformed = await stack.client.post("/instagram/webhook", data=b"{not json", headers=meta_headers(b"{not json"))
    # Then each is refused and nothing is stored
    assert (wrong.status, unsigned.status, altered.status, malformed.status) == (401, 401, 401, 400)
    assert await stack.messages() == []
    # When it is signed with the Meta app secret (the second configured secret)
    ok = await stack.post_instagram(payload, secret=META_SECRET)
    # Then it is accepted
    assert ok.status == 200 and await ok.text() == "EVENT_RECEIVED"


async def test_a_batch_is_handled_event_by_event_and_duplicates_answered_once(stack: Stack) -> None:
    # Given one POST with two entries: ours, carrying two customers' messages plus an echo, a read
    # receipt and an unsent message (Chatwoot's hand-written payloads); and an account nobody connected
    echo = fixture("instagram/chatwoot__instagram_story_mention_event_with_echo.json")["entry"][0]["messaging"][0]
    seen = fixture("instagram/chatwoot__messaging_seen_event.json")["entry"][0]["messaging"][0]
    unsent = fixture("instagram/chatwoot__instagram_message_unsend_event.json")["entry"][0]["messaging"][0]
    stranger = fixture("instagram/chatwoot__instagram_test_text_event.json")["entry"][0]
    first, second = text_event("Do you ship to Vienna?"), text_event("Is the shop open today?", sender="IGSID-CUSTOMER-2")
    own = text_event("A reply typed by the shop itself", sender=IG_ACCOUNT)
    payload = envelope((IG_ACCOUNT, [first, echo, seen, unsent, second, own]), (stranger["id"], stranger["messaging"]))
    # When it arrives, and then arrives again (Meta redelivers)
    assert (await stack.post_instagram(payload)).status == 200
    assert (await stack.post_instagram(payload)).status == 200
    await stack.settle()
    # Then the two customers are answered, once each, with the account's token, and nothing else is stored
    sent = await stack.graph.wait_sent(2)
    assert len(sent) == 2
    assert sorted(s["recipient"]["id"] for s in sent) == ["IGSID-CUSTOMER-1", "IGSID-CUSTOMER-2"]
    rows = await stack.messages()
    assert sorted(r.external_event_id for r in rows) == sorted([first["message"]["mid"], second["message"]["mid"]])
    assert all(r.status == "answered" for r in rows)


async def test_long_answers_are_split_under_1000_characters_in_order(stack: Stack) -> None:
    # Given an answer of several paragraphs, some with long sentences
    sentence = "Our winter collection is made of recycled wool and ships from the Leipzig warehouse within two days. "
    long_answer = "\n\n".join(sentence * n for n in (3, 12, 2, 15))
    stack.retrieval.texts["Tell me everything about the winter collection"] = long_answer
    # When the customer asks for it
    await stack.post_instagram(envelope((IG_ACCOUNT, [text_event("Tell me everything about the winter collection")])))
    await stack.settle()
    # Then it goes out in parts, each under 1,000 bytes, cut at boundaries, in order, nothing lost
    parts = [s["message"]["text"] for s in stack.graph.sent]
    assert len(parts) > 2 and all(len(p.encode()) < 1000 for p in parts)
    assert all(p.endswith((".", "?", "!")) for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(long_answer.split())


def test_splitting_cuts_at_the_largest_boundary_that_fits() -> None:
    assert split_message("short") == ["short"]
    paragraphs = split_message(("a" * 600 + ".") + "\n\n" + ("b" * 600 + "."))
    assert paragraphs == ["a" * 600 + ".", "b" * 600 + "."]
    unbroken = split_message("é" * 1500)  # 2 bytes each
    assert all(len(p.encode()) < 1000 for p in unbroken) and "".join(unbroken) == "é" * 1500


async def test_messages_older_than_24_hours_are_not_answered(stack: Stack) -> None:
    # Given Meta's documented text message with its original 2019 timestamp
    payload = fixture("instagram/meta-docs__instagram_messages__text_template.json")
    payload["entry"][0]["id"] = payload["entry"][0]["messaging"][0]["recipient"]["id"] = IG_ACCOUNT
    # And one sent 25 hours ago
    late = text_event("Still there?", age_ms=25 * 3600 * 1000)
    payload["entry"][0]["messaging"].append(late)
    # When they arrive
    await stack.post_instagram(payload)
    await stack.settle()
    # Then neither is answered: both are recorded as expired
    assert stack.graph.sent == []
    assert sorted(r.status for r in await stack.messages()) == ["expired", "expired"]


async def test_rate_limits_are_retried_and_a_closed_window_is_recorded_failed(stack: Stack) -> None:
    # Given the Send API rate-limiting once, then accepting
    stack.graph.fail(429, 4, "Application request limit reached", **{"Retry-After": "0"})
    await stack.post_instagram(envelope((IG_ACCOUNT, [text_event("Any discounts?")])))
    await stack.settle()
    assert len(stack.graph.sent) == 1
    # Given the Send API refusing for good (outside the allowed window)
    stack.graph.fail(400, 10, "This message is sent outside of allowed window.")
    await stack.post_instagram(envelope((IG_ACCOUNT, [text_event("And now?")])))
    await stack.settle()
    # Then it is not retried and the reason is kept
    assert len(stack.graph.sent) == 1
    failed = [r for r in await stack.messages() if r.status == "failed"]
    assert len(failed) == 1 and "outside of allowed window" in failed[0].error


async def test_documents_from_the_shop_are_ingested_and_from_customers_politely_refused(stack: Stack) -> None:
    # Given a PDF sent by the shop's own uploader account, and the same kind of file from a customer
    stack.graph.files["size-guide.pdf"] = (b"%PDF-1.4\n% a tiny test pdf\n", "application/pdf")
    attachment = {"type": "file", "payload": {"url": f"{stack.graph_url.rstrip('/')}/cdn/size-guide.pdf"}}
    from_owner = text_event("", sender=IG_UPLOADER)
    from_customer = text_event("", sender="IGSID-CUSTOMER-9")
    for event in (from_owner, from_customer):
        event["message"].pop("text")
        event["message"]["attachments"] = [attachment]
    # When they arrive
    await stack.post_instagram(envelope((IG_ACCOUNT, [from_owner, from_customer])))
    await stack.settle()
    # Then the owner's file is stored and queued (with where to report), the customer's is not
    async with unit_of_work(stack.sessions, admin=True) as session:
        [doc] = (await session.execute(select(Document))).scalars().all()
    assert doc.filename == "size-guide.pdf" and doc.source == "instagram"
    assert doc.notify == {"channel": "instagram", "account": IG_ACCOUNT, "recipient": IG_UPLOADER}
    replies = {s["recipient"]["id"]: s["message"]["text"] for s in stack.graph.sent}
    assert replies[IG_UPLOADER].startswith("received size-guide.pdf, indexing")
    assert "documents are added by the team" in replies["IGSID-CUSTOMER-9"]


async def test_an_attachment_linking_into_our_network_is_refused_and_never_fetched(stack: Stack) -> None:
    # Given a server inside our network (127.0.0.1, but not the Graph origin the gateway was configured
    # with) holding a document, and a webhook signed by Meta whose attachment links to it
    internal = await FileHost().start()
    internal.files["cdn/payroll.pdf"] = (b"%PDF-1.4\n% salaries\n", "application/pdf")
    event = text_event("", sender=IG_UPLOADER)
    event["message"].pop("text")
    event["message"]["attachments"] = [{"type": "file", "payload": {"url": internal.url("cdn/payroll.pdf")}}]
    try:
        # When it arrives from the shop's own uploader
        assert (await stack.post_instagram(envelope((IG_ACCOUNT, [event])))).status == 200
        await stack.settle()
    finally:
        await internal.close()
    # Then the link was never followed, nothing was stored or queued, and the uploader is told why
    assert internal.seen == []
    async with unit_of_work(stack.sessions, admin=True) as session:
        assert (await session.execute(select(Document))).scalars().all() == []
    [reply] = [s["message"]["text"] for s in stack.graph.sent if s["recipient"]["id"] == IG_UPLOADER]
    assert reply == "could not take payroll.pdf: the Instagram file link is not https; refusing to fetch it"
