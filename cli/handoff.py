"""`parley handoff …`: handing customer conversations to a person, and back.

    config   where the tenant's staff answer (a Slack channel), hours, expected wait, the reply time
             limit, the keywords and the number of refused answers that hand a conversation off
    list     the conversations handed to a person, with their state
    show     one conversation: its transcript, what staff sent, its transitions
    take / resolve / hand-back   what the staff thread's buttons do (the customer is told by the
             running gateway's next sweep)
"""

from __future__ import annotations

import json
from typing import Any

import click

from cli.app import Ctx, database, emit, main, out, run_async

STATES_HELP = "waiting_for_human, with_human, closed, bot, or handed_off (the first two)."


def _settings_lines(data: dict[str, Any]) -> list[str]:
    if not data["configured"]:
        return ["Handoff is not set up: the bot answers everything and never hands a conversation to a person.",
                "Set a staff channel to start: parley handoff config --tenant T --staff-channel C0123ABCD"]
    state = "on" if data["active"] else ("off (no staff channel)" if data["enabled"] else "off")
    return [f"handoff: {state}",
            f"staff channel: {data['staff_channel_id'] or '(none)'}"
            + (f" in Slack workspace {data['staff_team_id']}" if data["staff_team_id"] else " (the tenant's Slack workspace)"),
            f"hours told to customers: {data['hours'] or '(not set)'}",
            f"expected wait told: {data['expected_wait'] or '(not set)'}",
            f"reply time limit: {data['timeout_minutes']} minutes",
            f"hand off after refused answers in a row: {data['after_refusals'] or 'never'}",
            f"keywords: {', '.join(data['keywords']) or '(none)'}"]


@main.group(section="channels", example="parley handoff config --tenant acme --staff-channel C0123ABCD")
def handoff() -> None:
    """Hand customer conversations to a person (in the tenant's Slack channel) and back to the bot.

    A conversation is `bot`, `waiting_for_human`, `with_human` or `closed`. The customer asking
    for a person, one of the tenant's keywords, refused answers in a row, or a thumbs-down then
    another question hands it off; staff answer in its thread in the staff channel.
    """


@handoff.command("config", example='parley handoff config --tenant acme --staff-channel C0123ABCD --hours "Mon-Fri 9-17 CET" '
                                   '--wait "about 2 hours" --timeout-minutes 30 --keywords refund,lawyer --after-refusals 2')
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--staff-channel", help="The Slack channel id staff answer in (C…: in Slack, the channel's name > About).")
@click.option("--team", "team_id", help="The Slack workspace (T…) that posts there; default: the tenant's only one.")
@click.option("--hours", help='Your team\'s hours, told to the customer, e.g. "Mon-Fri 9-17 CET".')
@click.option("--wait", "expected_wait", help='The expected wait, told to the customer, e.g. "about 2 hours".')
@click.option("--timeout-minutes", type=click.IntRange(1, 1440),
              help="No staff reply within this long: the customer is told and offered to leave a message.")
@click.option("--keywords", help="Comma-separated words that hand off at once, e.g. refund,lawyer ('' clears them).")
@click.option("--after-refusals", type=click.IntRange(0, 20),
              help="Hand off after this many questions in a row the bot could not answer (0: never).")
@click.option("--enable/--disable", "enabled", default=None, help="Switch handoff on or off (keeps the settings).")
@click.pass_obj
@run_async
async def handoff_config(ctx: Ctx, tenant_name: str, staff_channel: str | None, team_id: str | None, hours: str | None,
                         expected_wait: str | None, timeout_minutes: int | None, keywords: str | None,
                         after_refusals: int | None, enabled: bool | None) -> None:
    """Show or change the tenant's handoff settings (only the options given change)."""
    from tenants import handoff as settings

    changing = any(v is not None for v in (staff_channel, team_id, hours, expected_wait, timeout_minutes, keywords,
                                           after_refusals, enabled))
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            if changing:
                row = await settings.configure(session, tenant_id=tenant.id, enabled=enabled, staff_team_id=team_id,
                                               staff_channel_id=staff_channel, hours=hours, expected_wait=expected_wait,
                                               timeout_minutes=timeout_minutes, after_refusals=after_refusals,
                                               keywords=keywords)
            else:
                row = await settings.HandoffSettingsRepository(session, tenant.id).current()
            data = settings.settings_json(row)
    if ctx.as_json:
        click.echo(json.dumps(data))
        return
    if changing:
        out.print(f"handoff settings of {tenant.name} saved", highlight=False)
    for line in _settings_lines(data):
        out.print(line, highlight=False)


@handoff.command("list", example="parley handoff list --tenant acme --state waiting_for_human")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--state", type=click.Choice(["waiting_for_human", "with_human", "closed", "bot", "handed_off"]),
              help=f"Only conversations in this state: {STATES_HELP}")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True, help="At most this many, newest first.")
@click.pass_obj
@run_async
async def handoff_list(ctx: Ctx, tenant_name: str, state: str | None, limit: int) -> None:
    """The conversations handed to a person (ever), newest first, with their state."""
    from bot.conversation.handoff import ConversationRepository, conversation_json

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            rows = [conversation_json(r) for r in await ConversationRepository(session, tenant.id).listing(state=state,
                                                                                                         limit=limit)]
    for row in rows:
        row["flagged"] = "yes" if row["flagged"] else ""
    emit(ctx, rows, ["id", "channel", "customer_id", "state", "handoff_reason", "handed_off_at", "flagged"],
         title="handed-off conversations")


@handoff.command("show", example="parley handoff show 3f2a9c1e --tenant acme")
@click.argument("conversation_id")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.pass_obj
@run_async
async def handoff_show(ctx: Ctx, conversation_id: str, tenant_name: str) -> None:
    """One conversation (its id or a unique prefix): state, transcript, staff replies, transitions."""
    from bot.conversation.handoff import ConversationRepository, conversation_json

    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            repo = ConversationRepository(session, tenant.id)
            row = await repo.resolve(conversation_id, hint="see `parley handoff list`")
            data = conversation_json(row)
            messages = [{"at": m.received_at.isoformat(), "customer": m.text, "bot": m.reply, "outcome": m.outcome}
                        for m in await repo.messages(row)]
            relayed = [{"at": m.created_at.isoformat(), "author": m.author, "text": m.text, "status": m.status,
                        "error": m.error} for m in await repo.relayed(row.id)]
            events = [{"at": e.at.isoformat(), "from": e.from_state, "to": e.to_state, "trigger": e.trigger, "actor": e.actor}
                      for e in await repo.events(row.id)]
    if ctx.as_json:
        click.echo(json.dumps({**data, "messages": messages, "relayed": relayed, "events": events}))
        return
    out.print(f"conversation {data['id']} ({data['channel']}, customer {data['customer_id']}): "
              f"{data['state'].replace('_', ' ')}" + (" [flagged: no reply in time]" if data["flagged"] else ""),
              highlight=False)
    for m in messages:
        out.print(f"{m['at'][:19]}  customer: {m['customer']}", highlight=False)
        if m["bot"]:
            out.print(f"{'':21}bot: {m['bot'][:300]}", highlight=False)
    for m in relayed:
        out.print(f"{m['at'][:19]}  {m['author']}: {m['text'][:300]} ({m['status']}{': ' + m['error'] if m['error'] else ''})",
                  highlight=False)
    for e in events:
        out.print(f"{e['at'][:19]}  {e['from']} -> {e['to']} ({e['trigger']}{', ' + e['actor'] if e['actor'] else ''})",
                  highlight=False)


def _action_command(name: str, action: str, doc: str) -> None:
    @handoff.command(name, help=doc, example=f"parley handoff {name} 3f2a9c1e --tenant acme")
    @click.argument("conversation_id")
    @click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
    @click.option("--by", "actor", default="cli", show_default=True, help="Who does it (recorded in the transitions).")
    @click.pass_obj
    @run_async
    async def command(ctx: Ctx, conversation_id: str, tenant_name: str, actor: str) -> None:
        from bot.conversation.handoff import Handoffs, conversation_json

        async with database(ctx.settings) as db:
            tenant = await db.tenant(tenant_name)
            changed, row = await Handoffs(sessions=db.sessions, channels={}).act(
                tenant_id=tenant.id, row_id=conversation_id, action=action, actor=actor)
            data = conversation_json(row)
        if ctx.as_json:
            click.echo(json.dumps({**data, "changed": changed}))
            return
        state = data["state"].replace("_", " ")
        if changed:
            out.print(f"conversation {data['id']} is now {state}"
                      + ("; the running gateway tells the customer" if action != "take" else ""), highlight=False)
        else:
            out.print(f"nothing to do: conversation {data['id']} is {state}", highlight=False)


_action_command("take", "take", "Take CONVERSATION_ID: a person owns it (the bot stays silent).")
_action_command("resolve", "resolve", "Resolve CONVERSATION_ID: closed; the customer is told and the bot answers again.")
_action_command("hand-back", "hand_back", "Hand CONVERSATION_ID back to the bot (the customer is told).")
