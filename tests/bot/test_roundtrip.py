"""Upload to indexed, end to end: a file in a Slack DM and two web uploads go through the real
broker and the real document worker process; the worker's notices come back into the DM through
the gateway's notifications consumer, the web sees the statuses change, and the next question
is answered from the new document."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import FormData

from tests.bot.conftest import Stack, dm, eventually, start_worker
from tests.bot.test_slack_files import file_share, serve

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

RETURNS = (b"# Returns policy\n\nYou can return any item within 30 days of delivery for a full refund.\n\n"
           b"## Exceptions\n\nGift cards and final-sale items cannot be returned.\n")


async def test_upload_to_indexed_through_the_real_worker(make_stack, worker_processes, tmp_path: Path) -> None:
    # Given the gateway and a real document worker on the same database and broker
    stack: Stack = await make_stack()
    worker_processes.append(start_worker(stack, tmp_path / "worker.log"))
    key = {"Authorization": f"Bearer {stack.api_key}"}
    # When a customer-service lead sends returns.md in a Slack DM
    payload = file_share(stack, [{"id": "F0RETURNS", "name": "returns.md", "mimetype": "text/markdown",
                                  "filetype": "markdown", "size": len(RETURNS)}])
    payload["event"]["files"][0]["url_private_download"] = payload["event"]["files"][0]["url_private_download"].replace(
        "namenamename.txt", "returns.md")
    serve(stack, payload, {"returns.md": RETURNS})
    assert (await stack.post_slack(payload)).status == 200
    # And the admin uploads a good and a broken document in the web chat
    form = FormData()
    form.add_field("file", b"Orders ship within 2 business days from Leipzig.\n", filename="shipping.txt",
                   content_type="text/plain")
    form.add_field("file", b"%PDF-1.7\nthis is not really a pdf\n", filename="broken.pdf", content_type="application/pdf")
    uploaded = await (await stack.client.post("/api/documents", data=form, headers=key)).json()
    ids = {d["filename"]: d["id"] for d in uploaded["documents"]}

    # Then the DM gets "received" at once and, once the worker is done, "indexed" - through the broker
    posted = await stack.slack.wait_posted(2, timeout=120)
    assert posted[0]["text"].startswith("received returns.md, indexing")
    assert posted[1]["text"].startswith("indexed returns.md (") and "sections)" in posted[1]["text"]
    assert posted[1]["channel"] == "D0442US94JD"

    # And the web sees its documents move from queued to indexed / failed with a reason
    async def settled() -> dict[str, dict]:
        docs = {}
        for name, doc_id in ids.items():
            docs[name] = await (await stack.client.get(f"/api/documents/{doc_id}", headers=key)).json()
        return docs if all(d["status"] in ("indexed", "failed") for d in docs.values()) else {}

    docs = await eventually(settled, timeout=120, interval=0.2)
    assert docs["shipping.txt"]["status"] == "indexed" and docs["shipping.txt"]["chunks"] >= 1
    assert docs["broken.pdf"]["status"] == "failed" and docs["broken.pdf"]["error"]
    job = await (await stack.client.get(f"/api/jobs/{uploaded['job_id']}", headers=key)).json()
    assert job["status"] == "done" and job["report"].startswith("1 of 2 indexed; 1 failed:")

    # When the customer then asks about returns in the DM
    await stack.post_slack(dm("How many days do I have to return an item?"))
    await stack.settle()
    # Then the answer cites the document that was just indexed
    answer = (await stack.slack.wait_posted(3))[2]
    assert "returns.md" in answer["text"] and "30 days" in answer["text"]
    assert worker_processes[0].poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
