"""👍/👎 under Slack answers: the ``feedback`` actions of ``/slack/interactivity``.

A click (``feedback:<up|down>:<message id>``) is recorded by `bot.feedback.service.rate` (the
same rating again changes nothing; the other one replaces it), and when it changed something the
answer is updated with ``chat.update`` to say what was recorded (the buttons stay, so the rater can
change their mind). A new 👎 opens a modal (``views.open`` with the click's
``trigger_id``) asking what was wrong; its submission (``view_submission``, callback id
``feedback:comment:<message id>``) is the comment (the modal closing says it was taken). Slack
failures here are logged: the rating is recorded whatever Slack says.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from bot.channels.slack.channel import STATUS_BLOCK, answer_blocks
from bot.channels.slack.interactivity import InteractionContext, register_action
from bot.feedback import service as feedback
from parley.db import unit_of_work
from parley.errors import ParleyError

log = logging.getLogger("parley.gateway.slack")

COMMENT_BLOCK, COMMENT_INPUT = "comment", "text"
STATUS = {
    feedback.UP: "You rated this answer 👍. Thanks!",
    feedback.DOWN: "You rated this answer 👎. Thanks: it helps the team fix what I got wrong.",
}


def comment_modal(message_id: str, *, channel_id: str, message_ts: str) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": f"{feedback.PREFIX}:comment:{message_id}",
        "private_metadata": json.dumps({"channel": channel_id, "ts": message_ts}),
        "title": {"type": "plain_text", "text": "What was wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [{
            "type": "input", "block_id": COMMENT_BLOCK,
            "label": {"type": "plain_text", "text": "What was wrong or missing in the answer?"},
            "element": {"type": "plain_text_input", "action_id": COMMENT_INPUT, "multiline": True,
                        "max_length": feedback.MAX_COMMENT_CHARS},
        }],
    }


def _client(ctx: InteractionContext) -> Any:
    slack = ctx.gateway.channels.get("slack")
    return getattr(slack, "client", None)


async def on_feedback(ctx: InteractionContext) -> None:
    if ctx.kind == "view_submission":
        await _on_comment(ctx)
        return
    parsed = feedback.parse_action(ctx.action_id)
    if parsed is None:
        log.info("slack feedback action not understood", extra={"action_id": ctx.action_id[:80]})
        return
    rating, message_id = parsed
    gw = ctx.gateway
    async with unit_of_work(gw.sessions, tenant_id=ctx.tenant_id) as session:
        rated = await feedback.rate(session, tenant_id=ctx.tenant_id, message_id=message_id, rater_id=ctx.user_id,
                                    rating=rating, channel="slack")
    client = _client(ctx)
    if rated.changed:
        gw.metrics.feedback.labels("slack", rating).inc()
    if client is None:
        return
    # a new 👎 asks what was wrong (a double click asks once); the trigger lives 3 s: first
    if rating == feedback.DOWN and rated.changed and ctx.trigger_id:
        try:
            await client.views_open(token=ctx.bot_token, trigger_id=ctx.trigger_id,
                                    view=comment_modal(message_id, channel_id=ctx.channel_id, message_ts=ctx.message_ts))
        except Exception as exc:  # noqa: BLE001 - the rating is recorded; the modal is a courtesy
            log.warning("could not open the feedback comment modal: %s", exc)
    if rated.changed and ctx.channel_id and ctx.message_ts:
        await _show(ctx, client, message_id, STATUS[rating])


async def _show(ctx: InteractionContext, client: Any, message_id: str, status: str) -> None:
    """Update the answer to say what was recorded (its text and buttons kept)."""
    message = ctx.message
    text = str(message.get("text") or "")
    blocks = message.get("blocks")
    if isinstance(blocks, list) and blocks:
        kept = [b for b in blocks if not (isinstance(b, dict) and b.get("block_id") == STATUS_BLOCK)]
        kept.append({"type": "context", "block_id": STATUS_BLOCK, "elements": [{"type": "mrkdwn", "text": status}]})
    else:
        kept = answer_blocks(text, message_id, status)
    try:
        await client.chat_update(token=ctx.bot_token, channel=ctx.channel_id, ts=ctx.message_ts, text=text or status,
                                 blocks=kept)
    except Exception as exc:  # noqa: BLE001 - the rating is recorded; showing it is a courtesy
        log.warning("could not show the recorded rating: %s", exc)


async def _on_comment(ctx: InteractionContext) -> None:
    parts = ctx.action_id.split(":")
    if len(parts) != 3 or parts[1] != "comment" or not parts[2]:
        log.info("slack feedback view not understood", extra={"callback_id": ctx.action_id[:80]})
        return
    message_id = parts[2]
    values = ((ctx.view or {}).get("state") or {}).get("values") or {}
    typed = ((values.get(COMMENT_BLOCK) or {}).get(COMMENT_INPUT) or {}).get("value")
    if not isinstance(typed, str) or not typed.strip():
        return  # an empty comment: the 👎 stands on its own
    try:
        async with unit_of_work(ctx.gateway.sessions, tenant_id=ctx.tenant_id) as session:
            await feedback.add_comment(session, tenant_id=ctx.tenant_id, message_id=message_id, rater_id=ctx.user_id,
                                       comment=typed, channel="slack")
    except ParleyError as exc:
        log.warning("feedback comment not recorded: %s", exc)
        return
    ctx.gateway.metrics.feedback_comments.labels("slack").inc()


def setup_slack_feedback(app: web.Application) -> None:
    register_action(app, feedback.PREFIX, on_feedback)
