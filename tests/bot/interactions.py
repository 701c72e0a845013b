"""Slack interactivity payloads as Slack sends them: form-encoded ``payload=<json>``, signed like events.

`block_actions` builds the documented payload of a button click on a message the bot posted
(docs.slack.dev/reference/interaction-payloads/block_actions-payload); `view_submission` that of a
submitted modal. `post_interaction` signs and posts one.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from tests.bot.conftest import BOT_ID, BOT_USER, TEAM, Stack, slack_headers

CUSTOMER = "U043H11ES4V"  # the DM's user in the captured message.im
FORM = "application/x-www-form-urlencoded"


def posted_ts(stack: Stack, posted: dict[str, Any]) -> str:
    """The ``ts`` the Slack emulator gave a chat.postMessage (its position in the log)."""
    return f"{stack.slack.posted.index(posted) + 1}.000100"


def block_actions(stack: Stack, posted: dict[str, Any], action_id: str, *, user: str = CUSTOMER, team: str = TEAM,
                  action_ts: str | None = None) -> dict[str, Any]:
    """A click on the element ``action_id`` of the message the bot posted (``posted``: as the emulator logged it)."""
    ts = posted_ts(stack, posted)
    channel = str(posted["channel"])
    value = action_id.split(":")[1] if action_id.count(":") >= 2 else ""
    message = {"type": "message", "user": BOT_USER, "ts": ts, "bot_id": BOT_ID, "app_id": "A0442TUPHGR",
               "text": posted.get("text", ""), "team": team, "blocks": posted.get("blocks") or []}
    if posted.get("thread_ts"):
        message["thread_ts"] = posted["thread_ts"]
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "customer", "name": "customer", "team_id": team},
        "api_app_id": "A0442TUPHGR", "token": "verification-token-deprecated",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": f"{int(time.time())}.4431.{uuid.uuid4().hex[:16]}",
        "team": {"id": team, "domain": "acme"}, "enterprise": None, "is_enterprise_install": False,
        "channel": {"id": channel, "name": "directmessage"},
        "message": message,
        "state": {"values": {}},
        "response_url": f"https://hooks.slack.com/actions/{team}/6104/{uuid.uuid4().hex[:24]}",
        "actions": [{"action_id": action_id, "block_id": "feedback", "value": value, "type": "button",
                     "text": {"type": "plain_text", "text": "👍" if value == "up" else "👎", "emoji": True},
                     "action_ts": action_ts or f"{time.time():.6f}"}],
    }


def view_submission(view: dict[str, Any], values: dict[str, Any], *, user: str = CUSTOMER, team: str = TEAM) -> dict[str, Any]:
    """The submission of the modal ``view`` (as views.open received it), with its inputs' ``values``."""
    return {
        "type": "view_submission", "team": {"id": team, "domain": "acme"},
        "user": {"id": user, "username": "customer", "name": "customer", "team_id": team},
        "api_app_id": "A0442TUPHGR", "token": "verification-token-deprecated",
        "trigger_id": f"{int(time.time())}.4431.{uuid.uuid4().hex[:16]}",
        "view": {**view, "id": "V0000000001", "team_id": team, "state": {"values": values}, "hash": "1664408649.abc",
                 "app_id": "A0442TUPHGR", "bot_id": BOT_ID},
        "response_urls": [], "is_enterprise_install": False, "enterprise": None,
    }


def form(payload: dict[str, Any] | str) -> str:
    return urlencode({"payload": payload if isinstance(payload, str) else json.dumps(payload)})


async def post_interaction(stack: Stack, payload: dict[str, Any] | str, *, path: str = "/slack/interactivity",
                           body: str | None = None, **headers: str) -> Any:
    body = form(payload) if body is None else body
    return await stack.client.post(path, data=body, headers=slack_headers(body, **{"Content-Type": FORM, **headers}))
