"""The dashboard's Jobs page names a stalled job and resumes it (issue 19.4; `knowledge.stalls`)."""

from __future__ import annotations

import datetime as dt

import aiohttp

from knowledge.stalls import StallPolicy, mark_stalled
from parley.bus.broker import QueueStats
from parley.db import unit_of_work, utcnow
from tests.bot.conftest import Stack
from tests.bot.test_admin import Browser, _open, browsers  # noqa: F401 - the fixture

POLICY = StallPolicy(base_seconds=60, item_floor_seconds=1, item_cap_seconds=10)


async def test_a_stalled_job_shows_its_reason_and_resumes_once(stack: Stack, browsers: list[Browser]) -> None:  # noqa: F811
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    other = await _open(stack, browsers).signed_in(stack.other_api_key)
    # Given acme's upload of two files that nobody indexes, past its deadline
    form = aiohttp.FormData()
    form.add_field("file", b"Open Monday to Friday.\n", filename="hours.txt", content_type="text/plain")
    form.add_field("file", b"We ship in two days.\n", filename="ship.txt", content_type="text/plain")
    up = await acme.json("POST", "/admin/api/documents", status=202, data=form)
    async with unit_of_work(stack.sessions, admin=True) as session:
        [stalled] = await mark_stalled(session, policy=POLICY, queues={"documents": QueueStats(0, 1)},
                                       now=utcnow() + dt.timedelta(hours=1))
    assert stalled.job_id == up["job_id"]
    # When acme's admin opens the Jobs page
    [job] = (await acme.json("GET", "/admin/api/jobs"))["jobs"]
    # Then the job is stalled, saying why, with its pending count
    assert (job["status"], job["pending"], job["stall_reason"]) == ("stalled", 2, "queue_empty")
    assert "2 items are still pending" in job["stall_detail"]
    # When another tenant tries to resume it, it is not theirs
    assert (await other.request("POST", f"/admin/api/jobs/{up['job_id']}/resume")).status == 404
    # When acme resumes it twice
    first = await acme.json("POST", f"/admin/api/jobs/{up['job_id']}/resume", status=202)
    second = await acme.json("POST", f"/admin/api/jobs/{up['job_id']}/resume", status=200)
    # Then both files were queued again once, and the job is running
    assert sorted(first["requeued"]) == ["hours.txt", "ship.txt"]
    assert second == {"job_id": up["job_id"], "requeued": [], "already_running": True}
    [job] = (await acme.json("GET", "/admin/api/jobs"))["jobs"]
    assert job["status"] == "running" and job["stall_reason"] is None
