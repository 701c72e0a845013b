"""Slack threads and questions sent with a file, through the real gateway, the real broker and (for
indexing) the real document worker process.

* A question asked in a thread is answered in that thread, and so is everything about it (upload
  received / indexed / failed, "slow down"); a top-level DM stays top-level.
* A DM carrying a file and a question (Slack's captured ``file_share`` with ``text``) is
  acknowledged ("Reading warranty.md…"), the file indexed, and the question answered from it once
  it is searchable; when the file cannot be read, the question is answered from what exists, and
  says so. The waiting question is stored, so it is answered after a gateway restart too.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.conversation.retry import RetryPolicy
from bot.conversation.service import AnswerPolicy
from knowledge.models import Document
from parley.bus import Envelope, Outgoing
from parley.bus.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, NoticeRequested
from parley.db import unit_of_work
from tests.bot.conftest import IG_ACCOUNT, IG_UPLOADER, Stack, dm, eventually, start_worker
from tests.bot.test_instagram import envelope, text_event
from tests.bot.test_limits import SLOW_DOWN, FakeClock
from tests.bot.test_slack_files import file_share, serve

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

#: The thread of Slack's captured threaded message (slack-web__botMessage.json: ``thread_ts``).
THREAD = "1664216109.798919"
WARRANTY = (b"# Warranty and returns\n\nYou can return any item within 30 days of delivery for a full refund. "
            b"The warranty covers manufacturing defects for 2 years from the date of purchase.\n")


def in_thread(payload: dict[str, Any], thread: str = THREAD) -> dict[str, Any]:
    payload["event"]["thread_ts"] = thread
    return payload


def with_file(stack: Stack, name: str, body: bytes, *, text: str, mimetype: str = "text/markdown") -> dict[str, Any]:
    """Slack's captured file_share, carrying ``name`` (served by the local Slack) and ``text``."""
    payload = file_share(stack, [{"id": f"F0{name.upper().replace('.', '')}", "name": name, "title": name,
                                  "mimetype": mimetype, "size": len(body)}], text=text)
    f = payload["event"]["files"][0]
    f["url_private_download"] = f["url_private_download"].replace("namenamename.txt", name)
    serve(stack, payload, {name: body})
    return payload


async def _row(stack: Stack, text: str) -> Any:
    [row] = [r for r in await stack.messages(channel="slack") if r.text == text]
    return row


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_question_in_a_thread_is_answered_in_that_thread_and_a_top_level_dm_stays_top_level(stack: Stack) -> None:
    # Given a question asked in a thread of the DM, and one asked at the top level
    await stack.post_slack(in_thread(dm("Do you ship to Canada?")))
    await stack.settle()
    await stack.post_slack(dm("Do you ship to Mexico?"))
    await stack.settle()
    # Then the first answer went into the thread, the second to the DM itself
    threaded, top = stack.slack.posted
    assert threaded["thread_ts"] == THREAD and threaded["channel"] == top["channel"] == "D0442US94JD"
    assert "thread_ts" not in top
    # And the thread is a conversation of its own (its turns are the follow-up history)
    first, second = await _row(stack, "Do you ship to Canada?"), await _row(stack, "Do you ship to Mexico?")
    assert first.conversation_id == second.conversation_id + f":{THREAD}"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_notices_about_a_file_sent_in_a_thread_go_into_that_thread(stack: Stack) -> None:
    # Given a file sent alone in a thread
    await stack.post_slack(in_thread(with_file(stack, "faq.md", b"# FAQ\n\nWe are open 9-5.\n", text="")))
    await stack.settle()
    # Then "received" is posted in the thread, and the document knows where to report
    [received] = stack.slack.posted
    assert received["text"].startswith("received faq.md, indexing") and received["thread_ts"] == THREAD
    async with unit_of_work(stack.sessions, admin=True) as session:
        doc = (await session.execute(select(Document))).scalar_one()
    assert doc.notify["thread_ts"] == THREAD
    # When the worker's "indexed" notice for it comes through the broker
    await stack.gw.bus_ready.wait()
    notice = Envelope.new(NOTICE_REQUESTED, tenant_id=stack.tenant_id, payload=NoticeRequested(
        text="indexed faq.md (1 section)", target=doc.notify, document_id=doc.id, kind="indexed").model_dump())
    await stack.gw.broker.publish(Outgoing.of(notice), routing_key=QUEUE_NOTIFICATIONS)
    # Then it is posted in the same thread
    indexed = (await stack.slack.wait_posted(2))[1]
    assert (indexed["text"], indexed["thread_ts"]) == ("indexed faq.md (1 section)", THREAD)


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_slow_down_notice_goes_into_the_thread_that_was_too_fast(make_stack) -> None:
    # Given a gateway where a sender may ask one question at once
    stack: Stack = await make_stack(clock=FakeClock(), sender_question_burst=1, sender_questions_per_minute=1.0)
    # When they ask twice in a thread
    for text in ("Do you ship to Canada?", "And to Mexico?"):
        assert (await stack.post_slack(in_thread(dm(text)))).status == 200
    await stack.settle()
    # Then the answer and the "slow down" are both in the thread
    assert [p.get("thread_ts") for p in stack.slack.posted] == [THREAD, THREAD]
    assert sum(SLOW_DOWN in p["text"] for p in stack.slack.posted) == 1


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_apology_for_an_outage_goes_into_the_thread(stack: Stack) -> None:
    # Given a retrieval service that is down for every attempt
    stack.retrieval.failures = 100
    # When a question is asked in a thread
    await stack.post_slack(in_thread(dm("Do you ship to Canada?")))
    await stack.settle()
    # Then the apology with its error id is posted in that thread
    [apology] = stack.slack.posted
    assert apology["text"].startswith("Sorry, I can't answer right now") and apology["thread_ts"] == THREAD


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_on_instagram_the_owner_waits_for_the_file_and_a_customer_is_answered_at_once(stack: Stack) -> None:
    # Given a file with a question from the shop's uploader account, and the same from a customer
    stack.graph.files["size-guide.pdf"] = (b"%PDF-1.4\n% a tiny test pdf\n", "application/pdf")
    attachment = {"type": "file", "payload": {"url": f"{stack.graph_url.rstrip('/')}/cdn/size-guide.pdf"}}
    owner, customer = text_event("Which size fits a 27 cm foot?", sender=IG_UPLOADER), text_event(
        "Which size fits a 27 cm foot?", sender="IGSID-CUSTOMER-9")
    for event in (owner, customer):
        event["message"]["attachments"] = [attachment]
    # When they arrive
    await stack.post_instagram(envelope((IG_ACCOUNT, [owner, customer])))
    await stack.settle()
    # Then the owner is told the file is being read and their question waits for it
    replies: dict[str, list[str]] = {}
    for sent in stack.graph.sent:
        replies.setdefault(sent["recipient"]["id"], []).append(sent["message"]["text"])
    assert replies[IG_UPLOADER] == ["Reading size-guide.pdf… I'll answer your question here as soon as I have read it."]
    statuses = {r.sender_id: r.status for r in await stack.messages(channel="instagram")}
    assert statuses == {IG_UPLOADER: "waiting", "IGSID-CUSTOMER-9": "answered"}
    # And the customer, whose file is not kept, still gets an answer to the question, after the refusal
    refusal, answer = replies["IGSID-CUSTOMER-9"]
    assert "documents are added by the team" in refusal and "I haven't kept size-guide.pdf" in refusal
    assert answer.startswith("I couldn't find that")


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_question_whose_file_takes_too_long_is_answered_from_what_there_is(make_stack) -> None:
    # Given a gateway where a question waits for its files at most 0 s, and no worker to read them
    policy = AnswerPolicy(retry=RetryPolicy(base=0.01, cap=0.05), file_wait=dt.timedelta(0))
    stack: Stack = await make_stack(deps={"answer_policy": policy})
    # When a file comes with a question
    await stack.post_slack(with_file(stack, "warranty.md", WARRANTY, text="How long is the warranty?"))
    await stack.settle()
    # Then the question is not left waiting: it is answered from what exists, saying the file is still being read
    reading, answer = stack.slack.posted
    assert reading["text"].startswith("Reading warranty.md…")
    assert answer["text"].startswith("I'm still reading warranty.md, so this answer is from what I have so far.")
    assert (await _row(stack, "How long is the warranty?")).status == "answered"


async def test_a_question_sent_with_a_file_is_answered_from_it_once_it_is_read(make_stack, worker_processes,
                                                                               tmp_path: Path) -> None:
    # Given the gateway and a real document worker, and a tenant with no documents yet
    stack: Stack = await make_stack()
    worker_processes.append(start_worker(stack, tmp_path / "worker.log"))
    # When a customer-service lead sends warranty.md with a question, in a thread
    question = "How many days do I have to return an item?"
    assert (await stack.post_slack(in_thread(with_file(stack, "warranty.md", WARRANTY, text=question)))).status == 200
    # Then they are told at once that it is being read, then that it was indexed, then get the answer
    reading, indexed, answer = await stack.slack.wait_posted(3, timeout=120)
    assert reading["text"].startswith("Reading warranty.md… I'll answer your question here")
    assert indexed["text"] == "indexed warranty.md (1 section)"
    assert "30 days" in answer["text"] and "warranty.md" in answer["text"]
    assert [p["thread_ts"] for p in (reading, indexed, answer)] == [THREAD] * 3
    await stack.settle()
    row = await _row(stack, question)
    assert row.status == "answered" and row.citations and row.citations[0]["title"] == "warranty.md"

    # When another question comes with a file the worker cannot read (top level this time)
    second = "How long does the warranty cover defects?"
    await stack.post_slack(with_file(stack, "broken.pdf", b"%PDF-1.7\nthis is not really a pdf\n", text=second,
                                     mimetype="application/pdf"))
    # Then the notice says why, and the question is still answered from what exists, saying so
    reading, failed, answer = (await stack.slack.wait_posted(6, timeout=120))[3:]
    assert reading["text"].startswith("Reading broken.pdf…") and failed["text"].startswith("could not index broken.pdf:")
    assert answer["text"].startswith("I couldn't read broken.pdf, so this answer is from what I had before.")
    assert "2 years" in answer["text"] and "thread_ts" not in answer
    await stack.settle()
    assert (await _row(stack, second)).status == "answered"
    assert worker_processes[0].poll() is None, (tmp_path / "worker.log").read_text()[-2000:]


@pytest.mark.parametrize("db_backend", ["sqlite"])  # the worker test above runs on both databases
async def test_a_waiting_question_is_answered_after_a_gateway_restart(make_stack, worker_processes, tmp_path: Path) -> None:
    # Given a question sent with a file to a gateway that stops before the file is read
    first: Stack = await make_stack()
    question = "How many days do I have to return an item?"
    await first.post_slack(with_file(first, "warranty.md", WARRANTY, text=question))
    await first.settle()
    assert (await _row(first, question)).status == "waiting"
    await first.close()
    # When the worker reads it while no gateway runs, and a new gateway starts (not hearing notices)
    worker_processes.append(start_worker(first, tmp_path / "worker.log"))

    async def indexed() -> bool:
        async with unit_of_work(first.sessions, admin=True) as session:
            return (await session.execute(select(Document.status))).scalar_one().value == "indexed"

    await eventually(indexed, timeout=120, interval=0.2)
    second: Stack = await make_stack(deps={"consume_notifications": False})
    # Then its start finds the question, and answers it from the file
    await eventually(lambda: len(second.slack.posted) >= 2, timeout=60)
    await second.settle()
    answer = second.slack.posted[1]
    assert "30 days" in answer["text"] and "warranty.md" in answer["text"]
    assert (await _row(second, question)).status == "answered"
