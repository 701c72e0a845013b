"""The conversation core: persist inbound messages once, answer them, record what happened.

    (intake)          `repository.InboundWriter.accept`: idempotent insert on (channel,
                      external_event_id), before the channel acks
    process(id)       claim (conditional UPDATE) -> reply window? -> files? -> turns -> retrieval
                      -> channel.send -> record reply, citations, latency, status, turns
    recoverable()     what a dead process left ``received``/``answering`` (the dispatcher claims
                      and answers them)

Vendor and retrieval failures that may pass (429 with Retry-After, 5xx, timeouts, connection
errors) are retried with backoff (`RetryPolicy`); whatever still fails ends ``failed`` with the
reason on the row, and the customer gets an apology with an error id instead of silence.
Statuses: received -> answering -> answered | failed | expired | ignored | waiting.

A question sent with files ("Reading warranty.pdf… I'll answer your question here as soon as I
have read it") ends its first claim ``waiting``, with the files it waits for in its context. When
they are read - the notifications consumer hears the worker's notice and calls
`AnswerDispatcher.release_ready`; the recovery sweeps and the start check too - it goes back to
``received`` and is answered like any question, asking retrieval for ``fresh`` results (the
index holds the new file), with a line first if a file could not be read. An empty, huge or
wordless message (`retrieval.schemas.question_problem`) gets its polite reply without a lookup.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.conversation import handoff as ho
from bot.conversation import repository as repo
from bot.conversation.handoff import ConversationState, Handoffs
from bot.conversation.failures import OUTSIDE_WINDOW, record_failure
from bot.conversation.repository import ANSWERED, EXPIRED, FAILED, IGNORED, RECEIVED, WAITING, Recoverable
from bot.conversation.windows import outside_window
from bot.feedback import service as feedback
from bot.conversation.priority import AckPriority
from bot.conversation.retry import RetryPolicy, retrying
from bot.conversation.schemas import Attachment, Channel, Reply, Standing
from bot.conversation.uploads import StoredFile, UploadIntake, check_download_type
from bot.metrics import GatewayMetrics
from bot.models import ConversationTurn, InboundMessage
from knowledge.audit import Actor
from knowledge.service import refuse_upload
from knowledge.models import DocumentStatus
from parley.db import unit_of_work, utcnow
from parley.english import plural
from parley.errors import ParleyError, TooLarge
from parley.logging import bound
from retrieval.client import RetrievalClient
from retrieval.schemas import MAX_MESSAGE_CHARS, MAX_TURNS, QueryRequest, Turn, question_problem
from tenants import quotas, uploaders
from tenants.quotas import QuotaExceeded

log = logging.getLogger("parley.gateway.conversation")

RATING_THANKS = "Thanks for the feedback!"
COMMENT_PROMPT = ("Sorry this didn't help. What was wrong or missing? Your next message here goes to the team as "
                  "your comment.")
COMMENT_THANKS = "Thanks, I've passed your comment on to the team."

#: Statuses of a known document that a question sent with it still waits for.
UNSETTLED = frozenset({DocumentStatus.queued.value, DocumentStatus.processing.value})


@dataclass(frozen=True)
class AnswerPolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    deadline: float = 180.0
    history_turns: int = 10
    recovery_window: dt.timedelta = dt.timedelta(minutes=30)
    recovery_grace: dt.timedelta = dt.timedelta(seconds=30)
    #: A question sent with files is answered at the latest this long after it came, read or not.
    file_wait: dt.timedelta = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Outcome:
    message_id: str
    status: str  # answered / failed / expired / ignored / skipped (someone else holds or finished it)
    reply: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    answer_ms: float | None = None
    #: The plan's refusal when the question was not answered because the tenant's questions are used up.
    quota: QuotaExceeded | None = None


@dataclass(frozen=True)
class _Held:
    """The claimed row, detached: what the work needs."""

    id: str
    tenant_id: str
    channel: str
    conversation_id: str
    text: str
    route: dict[str, Any]
    sent_at: dt.datetime | None
    received_at: dt.datetime
    attachments: list[Attachment]
    sender_id: str
    token: int
    context: dict[str, Any] = field(default_factory=dict)
    turns: list[ConversationTurn] = field(default_factory=list)
    #: Who owns the conversation and the tenant's handoff policy, read with the claim (`bot.conversation.handoff`).
    convo: ConversationState | None = None
    #: The handoff trigger this message pulls (asked / keyword / thumbs_down), if any.
    trigger: str | None = None

    @classmethod
    def of(cls, row: InboundMessage, token: int) -> _Held:
        ctx = row.context or {}
        sent = ctx.get("sent_at")
        return cls(
            id=row.id, tenant_id=row.tenant_id, channel=row.channel, conversation_id=row.conversation_id, text=row.text or "",
            route=dict(ctx.get("route") or {}), sent_at=dt.datetime.fromisoformat(sent) if sent else None,
            received_at=row.received_at, attachments=[Attachment.from_json(a) for a in ctx.get("attachments") or []],
            sender_id=row.sender_id or "", token=token, context=dict(ctx),
        )

    @property
    def files_taken(self) -> bool:
        """Its files were taken already (it waited for them): what is left is its question."""
        return bool(self.context.get("files_taken"))

    @property
    def question(self) -> bool:
        """It carries text that can be looked up (alone, or sent with files)."""
        return question_problem(self.text) is None


class ConversationService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        retrieval: RetrievalClient,
        channels: Mapping[str, Channel],
        intake: UploadIntake,
        policy: AnswerPolicy | None = None,
        metrics: GatewayMetrics | None = None,
        handoffs: Handoffs | None = None,
    ) -> None:
        self.sessions = sessions
        self.retrieval = retrieval
        self.channels = channels
        self.intake = intake
        self.policy = policy or AnswerPolicy()
        self.metrics = metrics or GatewayMetrics()
        #: Handoff to a person: its staff side (a Slack desk) is given by the gateway; without one,
        #: conversations are still handed off and worked from the dashboard.
        self.handoffs = handoffs or Handoffs(sessions=sessions, channels=channels, metrics=self.metrics,
                                             retry=self.policy.retry)
        #: Set by the gateway when answering shares the webhooks' event loop (see `AckPriority`).
        self.priority: AckPriority | None = None
        self._acks: dict[str, float] = {}
        self._finished: dict[str, None] = {}  # recently finished ids (insertion-ordered, bounded)
        self._late_acks: set[asyncio.Future[None]] = set()

    # --- acks -------------------------------------------------------------------------------
    def record_ack(self, tenant_id: str, message_id: str, ack_ms: float) -> None:
        """Remember how long the ack took; it is written with the outcome (no extra write per message)."""
        if message_id in self._finished:
            self._late_acks.add(asyncio.ensure_future(self._write_ack(tenant_id, message_id, ack_ms)))
            self._late_acks = {t for t in self._late_acks if not t.done()}
            return
        self._acks[message_id] = ack_ms
        if len(self._acks) > 100_000:  # acks of messages another process answered: forget the oldest
            self._acks.pop(next(iter(self._acks)))

    async def _write_ack(self, tenant_id: str, message_id: str, ack_ms: float) -> None:
        try:
            await repo.set_ack_ms(self.sessions, tenant_id, message_id, ack_ms)
        except Exception:  # a statistic: never worth failing anything for
            log.warning("could not record the ack latency", exc_info=True)

    async def _yield_to_webhooks(self) -> None:
        if self.priority is not None:
            await self.priority.yield_to_webhooks()

    # --- answering --------------------------------------------------------------------------
    async def process(self, tenant_id: str, message_id: str, *, status: str = RECEIVED, attempts: int | None = None) -> Outcome:
        """Claim the message and answer it (or ingest its files). Exactly one caller wins the claim."""
        await self._yield_to_webhooks()
        async with unit_of_work(self.sessions, tenant_id=tenant_id) as session:
            claimed = await repo.claim(session, message_id, status=status, attempts=attempts)
            if claimed is None:
                return Outcome(message_id, "skipped")
            held = _Held.of(claimed[1], claimed[0])
            if held.question:  # the history the answer needs, in the same transaction
                held.turns.extend(await repo.recent_turns(session, tenant_id, held.conversation_id, self.policy.history_turns))
            # who owns the conversation (a person: the bot stays silent), and whether this message hands it off
            convo = await ho.load(session, tenant_id=tenant_id, channel=held.channel, conversation_id=held.conversation_id)
            trigger = await ho.detect(session, tenant_id=tenant_id, channel=held.channel,
                                      conversation_id=held.conversation_id, message_id=held.id, text=held.text,
                                      state=convo) if held.question else None
            held = replace(held, convo=convo, trigger=trigger)
        with bound(tenant_id=tenant_id, message_id=message_id, channel=held.channel, correlation_id=message_id):
            try:
                async with asyncio.timeout(self.policy.deadline):
                    outcome = await self._work(held)
            except asyncio.CancelledError:
                await asyncio.shield(self._release(held))
                raise
            except TimeoutError:
                outcome = await self._finish_failed(held, f"no answer within {self.policy.deadline:g}s")
            except Exception as exc:
                error_id = uuid.uuid4().hex[:12]
                log.exception("answering failed", extra={"error_id": error_id})
                outcome = await self._finish_failed(held, f"unexpected error {type(exc).__name__} (error id {error_id})")
            self.metrics.answers.labels(held.channel, outcome.status).inc()
            # a question that waited for its files measures the indexing too: not an answer latency
            if outcome.status == ANSWERED and outcome.answer_ms is not None and not held.files_taken:
                self.metrics.answer_seconds.labels(held.channel).observe(outcome.answer_ms / 1000)
            log.info("message %s", outcome.status, extra={"answer_ms": outcome.answer_ms, "error": outcome.error})
            return outcome

    async def _work(self, held: _Held) -> Outcome:
        channel = self.channels.get(held.channel)
        if channel is None:
            return await self._finish_failed(held, f"no channel {held.channel!r} is configured in this gateway")
        window = channel.reply_window
        if window is not None and held.sent_at is not None and utcnow() - held.sent_at > window:
            # too late to answer: recorded as a delivery failure (shown, counted), not dropped in silence
            reason = outside_window(held.channel, utcnow() - held.sent_at, window)
            await record_failure(self.sessions, self.metrics, tenant_id=held.tenant_id, channel=held.channel,
                                 conversation_id=held.conversation_id, message_id=held.id, reason_code=OUTSIDE_WINDOW,
                                 detail=reason, by="bot")
            return await self._finish(held, EXPIRED, error=reason)
        if held.convo is not None and held.convo.person_owns:  # a person answers here: the bot stays silent
            return await self._silent(held)
        if held.context.get("feedback"):  # a rating control (Instagram quick reply), not a question
            return await self._rating(held, channel)
        if not held.attachments and await self._comment(held, channel):  # the comment a 👎 asked for
            return await self._finish(held, IGNORED, reply=Reply(COMMENT_THANKS))
        if held.attachments and not held.files_taken:
            return await self._ingest(held, channel)
        problem = question_problem(held.text)
        if problem is not None:  # empty, huge or wordless: say so, politely, without asking retrieval
            return await self._reply(held, channel, Reply(problem), outcome="bad_question")
        if held.trigger is not None and held.convo is not None:
            return await self._hand_off(held, channel, held.trigger)
        return await self._answer(held, channel)

    async def _reply(self, held: _Held, channel: Channel, reply: Reply, *, outcome: str | None = None) -> Outcome:
        problem = await self._deliver(held, channel, reply)
        if problem is not None:
            return await self._finish_failed(held, problem, reply=reply)
        return await self._finish(held, ANSWERED, reply=reply, outcome=outcome)

    # --- handoff to a person (bot.conversation.handoff) --------------------------------------
    async def _silent(self, held: _Held) -> Outcome:
        """A person owns the conversation: not answered, posted into their staff thread instead
        (before it is recorded: a restart in between posts it again rather than losing it)."""
        assert held.convo is not None and held.convo.row_id is not None
        await self.handoffs.customer_said(held.tenant_id, held.convo.row_id, held.text, [a.name for a in held.attachments])
        return await self._finish(held, IGNORED, outcome="silent")

    async def _hand_off(self, held: _Held, channel: Channel, trigger: str, *, reply: Reply | None = None,
                        turns: bool = False, context: dict[str, Any] | None = None) -> Outcome:
        """Tell the customer a person will answer (and roughly when), then hand the conversation
        off in the unit of work that records the message; then open the staff thread."""
        convo = held.convo
        assert convo is not None
        reply = reply or Reply(ho.handoff_notice(convo.policy))
        problem = await self._deliver(held, channel, reply)
        handed: list[str | None] = []

        async def then(session: AsyncSession) -> None:
            handed.append(await self.handoffs.hand_off(
                session, tenant_id=held.tenant_id, channel=held.channel, conversation_id=held.conversation_id,
                customer_id=held.sender_id, route=held.route, trigger=trigger, policy=convo.policy))

        outcome = await self._finish(held, ANSWERED if problem is None else FAILED, reply=reply,
                                     error=problem[:2000] if problem else None, turns=turns and problem is None,
                                     context=context, outcome="handed_off", then=then)
        if handed and handed[0] is not None:
            await self.handoffs.open_thread(held.tenant_id, handed[0])
        return outcome

    def _streak(self, held: _Held, *, refused: bool) -> Callable[[AsyncSession], Awaitable[None]] | None:
        """Count a refused answer (for a tenant that hands off on refusals), or reset the count."""
        convo = held.convo
        if convo is None:
            return None
        if refused and convo.policy.active and convo.policy.after_refusals > 0:
            async def count(session: AsyncSession) -> None:
                await self.handoffs.count_refusal(session, tenant_id=held.tenant_id, channel=held.channel,
                                                  conversation_id=held.conversation_id, customer_id=held.sender_id,
                                                  route=held.route)
            return count
        row_id = convo.row_id
        if not refused and row_id is not None and convo.refused_streak:
            async def reset(session: AsyncSession) -> None:
                await self.handoffs.reset_refusals(session, tenant_id=held.tenant_id, row_id=row_id)
            return reset
        return None

    async def _answer(self, held: _Held, channel: Channel) -> Outcome:
        turns = held.turns
        preface = ""
        if held.files_taken:  # it waited for its files: what became of them, in one line before the answer
            async with unit_of_work(self.sessions, tenant_id=held.tenant_id) as session:
                files = await repo.awaited_files(session, held.tenant_id, list(held.context.get("awaits") or []))
            preface = _files_preface(files)
        refused = await self._charge_question(held)
        if refused is not None:  # the plan's questions are used up: say so, politely, without a lookup
            reply = Reply(refused.message)
            delivered = await self._deliver(held, channel, reply)
            if delivered is not None:
                return await self._finish_failed(held, delivered, reply=reply)
            done = await self._finish(held, ANSWERED, reply=reply, error=f"{refused.code}: {refused.message}",
                                      outcome=QuotaExceeded.code)
            return replace(done, quota=refused)
        request = QueryRequest(
            tenant_id=held.tenant_id, conversation_id=held.conversation_id[:256], message=held.text.strip(),
            turns=[Turn(role="user" if t.role == "user" else "assistant", text=t.text[: MAX_MESSAGE_CHARS * 4])
                   for t in turns[-MAX_TURNS:]],
            fresh=held.files_taken,  # answered from the files it waited for, not from an index that lags them
        )
        await self._yield_to_webhooks()
        try:
            response = await retrying(lambda: self.retrieval.query(request), policy=self.policy.retry, what="retrieval")
        except ParleyError as exc:
            error_id = uuid.uuid4().hex[:12]
            log.warning("retrieval failed for good: %s", exc, extra={"error_id": error_id})
            await self._try_send(held, channel, Reply(
                f"Sorry, I can't answer right now. Please try again in a few minutes. (error id {error_id})"))
            return await self._finish_failed(held, f"retrieval failed: {exc.code}: {exc.message} (error id {error_id})")
        reply = Reply(text=preface + response.answer, citations=[c.model_dump(exclude_none=True) for c in response.citations],
                      feedback_id=held.id)  # an answer: it may be rated (👍/👎, bot.feedback)
        # who produced it (extractive, or the chat model), for the feedback on it
        context = {**held.context, "answered_by": response.answer_model or response.answered_by}
        if not response.found and held.convo is not None and ho.refusals_trigger(held.convo):
            # the tenant's number of unanswered questions in a row: this one hands the conversation off
            reply = replace(reply, text=reply.text + "\n\n" + ho.handoff_notice(held.convo.policy))
            return await self._hand_off(held, channel, "refusals", reply=reply, turns=True, context=context)
        delivered = await self._deliver(held, channel, reply)
        if delivered is not None:
            return await self._finish_failed(held, delivered, reply=reply)
        return await self._finish(held, ANSWERED, reply=reply, turns=True, context=context,
                                  outcome="answered" if response.found else "refused",
                                  then=self._streak(held, refused=not response.found))

    async def _charge_question(self, held: _Held) -> QuotaExceeded | None:
        """Count the question against the tenant's plan, once per message (a recovered or repeated
        answer of the same message counts nothing more); the refusal when the plan is used up."""
        try:
            async with unit_of_work(self.sessions, tenant_id=held.tenant_id) as session:
                await quotas.charge_question(session, tenant_id=held.tenant_id, defaults=self.intake.plan,
                                             key=f"message:{held.id}")
        except QuotaExceeded as exc:
            self.metrics.quota_refusals.labels(held.channel, exc.resource).inc()
            await quotas.note_refusal(self.sessions, tenant_id=held.tenant_id, exc=exc)
            return exc
        return None

    # --- feedback (bot.feedback) ------------------------------------------------------------
    async def _rating(self, held: _Held, channel: Channel) -> Outcome:
        """A 👍/👎 quick reply: recorded on the answer it rates; a 👎 asks what was wrong."""
        parsed = feedback.parse_action(str(held.context.get("feedback")))
        if parsed is None:
            return await self._finish(held, IGNORED, error="not a rating this bot sent")
        rating, message_id = parsed
        try:
            async with unit_of_work(self.sessions, tenant_id=held.tenant_id) as session:
                rated = await feedback.rate(session, tenant_id=held.tenant_id, message_id=message_id, rater_id=held.sender_id,
                                            rating=rating, channel=held.channel, asker=held.sender_id)
                ask = rating == feedback.DOWN and rated.comment is None
                if ask:
                    await feedback.request_comment(session, tenant_id=held.tenant_id, feedback_id=rated.id)
        except ParleyError as exc:
            return await self._finish(held, IGNORED, error=f"rating not recorded: {exc.message}")
        if rated.changed:
            self.metrics.feedback.labels(held.channel, rating).inc()
        reply = Reply(COMMENT_PROMPT if ask else RATING_THANKS)
        problem = await self._deliver(held, channel, reply)
        return await self._finish(held, IGNORED, reply=reply, error=problem)

    async def _comment(self, held: _Held, channel: Channel) -> bool:
        if not held.text.strip():
            return False
        async with unit_of_work(self.sessions, tenant_id=held.tenant_id) as session:
            taken = await feedback.take_requested_comment(session, tenant_id=held.tenant_id, channel=held.channel,
                                                          rater_id=held.sender_id, text=held.text)
        if taken is None:
            return False
        self.metrics.feedback_comments.labels(held.channel).inc()
        await self._deliver(held, channel, Reply(COMMENT_THANKS))
        return True

    async def _ingest(self, held: _Held, channel: Channel) -> Outcome:
        """Take the files. A question sent with them waits (``waiting``) until they are read - the
        notice of their outcome wakes it (`release_ready`) - and is answered at once when there is
        nothing to wait for (the files were refused, could not be taken, or are known and read)."""
        actor, refusal = await self._uploader(held, channel)
        text, awaits = (refusal, []) if actor is None else await self._take_files(held, channel, actor, question=held.question)
        reply = Reply(text)
        if text:
            problem = await self._deliver(held, channel, reply)
            if problem is not None:
                return await self._finish_failed(held, problem, reply=reply)
        if not held.question:
            return await self._finish(held, ANSWERED, reply=reply)
        if not awaits:  # nothing to wait for: the question is answered from what the tenant has
            return await self._answer(replace(held, context={**held.context, "files_taken": True, "awaits": []}), channel)
        context = {**held.context, "files_taken": True, "awaits": awaits}
        return await self._finish(held, WAITING, reply=reply, context=context)

    async def _uploader(self, held: _Held, channel: Channel) -> tuple[Actor | None, str]:
        """The sender as an uploader with their rights, or (None, a polite refusal). The tenant's
        policy decides (`tenants.uploaders`) from what the channel knows of the sender; a refusal
        is recorded in the audit log and nothing is downloaded or stored."""
        checked: str | None = None
        try:
            standing = await retrying(
                lambda: channel.standing(tenant_id=held.tenant_id, route=held.route, sender_id=held.sender_id),
                policy=self.policy.retry, what=f"{held.channel} sender check")
        except ParleyError as exc:  # the vendor could not say: only the listed uploaders get through
            log.warning("could not check who sent the files: %s", exc)
            standing, checked = Standing(admin=False), exc.message
        names = [a.name for a in held.attachments]
        async with unit_of_work(self.sessions, tenant_id=held.tenant_id) as session:
            permission = await uploaders.decide(session, tenant_id=held.tenant_id, channel=held.channel,
                                                user_id=held.sender_id, channel_admin=standing.admin,
                                                admin_reason=standing.why)
            actor = Actor(held.channel, held.sender_id, may_replace=permission.may_replace)
            if not permission.may_upload:
                why = permission.reason if checked is None else f"{permission.reason}; could not check with {held.channel}: {checked}"
                refuse_upload(session, tenant_id=held.tenant_id, actor=actor, filenames=names, why=why)
        if permission.may_upload:
            return actor, ""
        self.metrics.uploads.labels(held.channel, "refused").inc(len(names))
        log.info("upload refused", extra={"reason": permission.reason, "files": len(names)})
        kept = ", ".join(names)
        if checked is not None:
            return None, (f"I couldn't check with {held.channel.capitalize()} whether you may add documents, so I "
                          f"haven't kept {kept}. Please send {'it' if len(names) == 1 else 'them'} again in a few minutes.")
        return None, (f"I can answer questions here, but documents are added by the team that runs me, so I haven't "
                      f"kept {kept}. If you are on that team, ask an admin to add you as an uploader.")

    async def _take_files(self, held: _Held, channel: Channel, actor: Actor, *,
                          question: bool) -> tuple[str, list[dict[str, str]]]:
        """Fetch, store and submit the files: the reply about them, and the files a question sent
        with them must wait for (``question``: the reply says it will be answered once they are read)."""
        limit = await self.intake.limit_for(held.tenant_id)
        stored: list[StoredFile] = []
        problems: list[str] = []
        for attachment in held.attachments:
            try:
                stored.append(await self._fetch(held, channel, attachment, limit))
                self.metrics.uploads.labels(held.channel, "stored").inc()
            except ParleyError as exc:
                self.metrics.uploads.labels(held.channel, exc.code).inc()
                problems.append(f"could not take {attachment.name}: {exc.message}")
            except Exception as exc:
                error_id = uuid.uuid4().hex[:12]
                log.exception("receiving a file failed", extra={"error_id": error_id})
                self.metrics.uploads.labels(held.channel, "error").inc()
                problems.append(f"could not take {attachment.name}: unexpected error {type(exc).__name__} (error id {error_id})")
        lines = []
        awaits: list[dict[str, str]] = []
        if stored:
            notify = {"channel": held.channel, **held.route}
            try:
                submission = await self.intake.submit(held.tenant_id, source=held.channel, files=stored, notify=notify,
                                                      description=f"{plural(len(stored), 'file')} sent in a {held.channel} DM",
                                                      actor=actor)
            except QuotaExceeded as exc:  # past the plan: nothing was kept, and the notice names the limit
                self.metrics.uploads.labels(held.channel, exc.code).inc(len(stored))
                self.metrics.quota_refusals.labels(held.channel, exc.resource).inc()
                return "\n".join([f"I haven't kept {', '.join(f.name for f in stored)}: {exc.message}", *problems]), []
            new = [f.name for f in submission.files if f.created]
            known = [f for f in submission.files if not f.created and not f.refused]
            for f in submission.files:
                if f.refused:
                    self.metrics.uploads.labels(held.channel, "refused").inc()
                    problems.append(f"I haven't replaced {f.name}: {f.refused}.")
            # what a question sent with them waits for: the new files, and known ones still being read
            awaits = [{"id": f.document_id, "name": f.name} for f in submission.files
                      if not f.refused and (f.created or f.status in UNSETTLED)]
            if new and question:
                lines.append(f"Reading {', '.join(new)}… I'll answer your question here as soon as I have read "
                             f"{'it' if len(new) == 1 else 'them'}.")
            elif new:
                lines.append(f"received {', '.join(new)}, indexing. I'll tell you here when {'it is' if len(new) == 1 else 'they are'} ready.")
            for f in known:
                lines.append(f"I already have {f.name} ({f.status}).")
        return "\n".join(lines + problems), awaits

    async def _fetch(self, held: _Held, channel: Channel, attachment: Attachment, limit: int) -> StoredFile:
        stub = bool(attachment.ref.get("stub"))
        if not stub:  # refuse what cannot be read before downloading anything
            self.intake.check_supported(attachment.name, attachment.mime_type)
            if attachment.size is not None and attachment.size > limit:
                raise TooLarge(f"it is {_mb(attachment.size)}, over the limit of {_mb(limit)}")

        async def download() -> StoredFile:
            async with channel.download(tenant_id=held.tenant_id, route=held.route, attachment=attachment) as dl:
                name = dl.name or attachment.name
                mime = self.intake.check_supported(name, dl.mime_type or attachment.mime_type)
                size = attachment.size if attachment.size is not None else dl.size
                if size is not None and size > limit:
                    raise TooLarge(f"it is {_mb(size)}, over the limit of {_mb(limit)}")
                check_download_type(name, mime, dl.content_type)
                try:
                    blob = await self.intake.store(held.tenant_id, name, dl.chunks, max_bytes=limit, declared_size=size)
                except TooLarge as exc:
                    raise TooLarge(f"it is over the limit of {_mb(limit)}") from exc
                return StoredFile(name, mime, blob)

        return await retrying(download, policy=self.policy.retry, what=f"download of {attachment.name}")

    async def _deliver(self, held: _Held, channel: Channel, reply: Reply) -> str | None:
        """Send with retries; None when delivered, else the reason it was not."""
        progress: dict[str, Any] = {}
        await self._yield_to_webhooks()
        try:
            await retrying(lambda: channel.send(tenant_id=held.tenant_id, route=held.route, reply=reply, progress=progress),
                           policy=self.policy.retry, what=f"{held.channel} send")
        except ParleyError as exc:
            return f"could not deliver the reply: {exc.message}"
        return None

    async def _try_send(self, held: _Held, channel: Channel, reply: Reply) -> None:
        if await self._deliver(held, channel, reply) is not None:
            log.warning("could not deliver the apology either")

    # --- recording --------------------------------------------------------------------------
    async def _finish(self, held: _Held, status: str, *, reply: Reply | None = None, error: str | None = None,
                      turns: bool = False, context: dict[str, Any] | None = None, outcome: str | None = None,
                      then: Callable[[AsyncSession], Awaitable[None]] | None = None) -> Outcome:
        """Record the outcome (``outcome``: answered / refused / handed_off / silent / bad_question);
        ``then`` runs in the same unit of work when the record lands (the conversation's state)."""
        now = utcnow()
        answer_ms = round((now - held.received_at).total_seconds() * 1000, 1)
        await self._yield_to_webhooks()
        values: dict[str, Any] = {}
        if held.id in self._acks:
            values["ack_ms"] = self._acks.pop(held.id)
        if context is not None:
            values["context"] = context
        if outcome is not None:
            values["outcome"] = outcome
        async with unit_of_work(self.sessions, tenant_id=held.tenant_id) as session:
            landed = await repo.finish(
                session, held.id, held.token, status=status, reply=reply.text if reply else None,
                citations=reply.citations if reply else None, error=error, answered_at=now,
                answer_ms=answer_ms if status == ANSWERED else None, **values,
            )
            if landed and turns and reply is not None:
                session.add_all([
                    ConversationTurn(tenant_id=held.tenant_id, conversation_id=held.conversation_id, role="user",
                                     text=held.text, created_at=held.received_at),
                    ConversationTurn(tenant_id=held.tenant_id, conversation_id=held.conversation_id, role="assistant",
                                     text=reply.text, created_at=now),
                ])
            if landed and then is not None:
                await then(session)
        self._finished[held.id] = None
        if len(self._finished) > 10_000:
            self._finished.pop(next(iter(self._finished)))
        if landed and outcome is not None:
            self.metrics.questions.labels(held.channel, outcome).inc()  # bot.analytics' outcomes, as a counter
        if not landed:
            log.warning("the claim on the message was lost before its outcome was recorded")
        return Outcome(held.id, status, reply=reply.text if reply else None, citations=reply.citations if reply else [],
                       error=error, answer_ms=answer_ms if status == ANSWERED else None)

    async def _finish_failed(self, held: _Held, reason: str, *, reply: Reply | None = None) -> Outcome:
        return await self._finish(held, FAILED, reply=reply, error=reason[:2000])

    async def _release(self, held: _Held) -> None:
        try:
            async with unit_of_work(self.sessions, tenant_id=held.tenant_id) as session:
                await repo.release(session, held.id, held.token)
        except Exception:
            log.warning("could not release the claim; the recovery at the next start takes it", exc_info=True)

    # --- questions waiting for their files ----------------------------------------------------
    async def release_ready(self, tenant_id: str | None = None) -> list[Recoverable]:
        """Waiting questions whose files are all read (indexed, failed or deleted), or that waited
        `AnswerPolicy.file_wait`: each turned back into ``received`` (a compare-and-set) and
        returned for answering. Of one tenant (a notice of theirs came), or of all (the sweeps).
        Stored in the message's row, so a question outlives a restart of the gateway."""
        async with unit_of_work(self.sessions, admin=True) as session:
            rows = await repo.waiting(session, tenant_id=tenant_id)
        woken: list[Recoverable] = []
        overdue = utcnow() - self.policy.file_wait
        for message_id, owner, context, received_at in rows:
            async with unit_of_work(self.sessions, tenant_id=owner) as session:
                files = await repo.awaited_files(session, owner, list(context.get("awaits") or []))
                if (received_at <= overdue or all(f.settled for f in files)) and await repo.wake(session, message_id):
                    woken.append(Recoverable(message_id, owner, RECEIVED, 0))
        return woken

    # --- recovery ---------------------------------------------------------------------------
    async def recoverable(self, *, at_start: bool) -> list[Recoverable]:
        """Messages a dead process left unanswered, younger than the recovery window: ``received``
        ones (at start all of them, later only those nobody claimed within the grace period) and
        ``answering`` ones whose lease (the answer deadline + 30 s) has run out."""
        async with unit_of_work(self.sessions, admin=True) as session:
            return await repo.recoverable(
                session, younger_than=self.policy.recovery_window,
                lease=dt.timedelta(seconds=self.policy.deadline + 30),
                received_grace=dt.timedelta(0) if at_start else self.policy.recovery_grace,
            )


def _files_preface(files: list[repo.AwaitedFile]) -> str:
    """The line before the answer to a question that waited for its files, when not all were read
    (why it failed was in the notice; this says the answer is from what the tenant had)."""
    failed = [f.name for f in files if f.status in ("failed", "missing", "deleted")]
    unread = [f.name for f in files if not f.settled]
    lines = []
    if failed:
        lines.append(f"I couldn't read {', '.join(failed)}, so this answer is from what I had before.")
    if unread:
        lines.append(f"I'm still reading {', '.join(unread)}, so this answer is from what I have so far.")
    return " ".join(lines) + "\n\n" if lines else ""


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"

