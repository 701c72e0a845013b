"""The analytics report of one tenant over a time window, and the definitions of its figures.

Every figure is defined once, here (:data:`DEFINITIONS`); the CLI, the dashboard and the CSV show
these sentences beside the figures, and README's "Analytics" section quotes them.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

#: The resolution rate, in words: shown with the figure everywhere it appears.
RESOLUTION_DEFINITION = (
    "A conversation is resolved when the bot answered at least one of its questions, it was not handed "
    "to a person, and no answer in it got a 👎. Resolution rate = resolved conversations / conversations "
    "with at least one question. A conversation still open counts on what happened so far (it stops "
    "counting as resolved if it is handed off or rated 👎 later); one waiting for or with a person "
    "counts as not resolved."
)

DEFINITIONS: dict[str, str] = {
    "window": "Everything counted was received in the window (a conversation counts when one of its messages "
              "was); feedback and handoffs count with the question or conversation they are about.",
    "questions": "Questions are the messages the bot decided on: answered, refused (nothing in your documents "
                 "held the answer) or handed off (a person was asked for). Messages sent while a person owned "
                 "the conversation, messages that were not questions (empty, emoji only, too long) and "
                 "questions not answered because the plan's questions were used up are counted apart.",
    "answered_rate": "Answered / refused / handed off rate = that outcome's share of the questions.",
    "resolution_rate": RESOLUTION_DEFINITION,
    "automation_rate": "Conversations with a question that were never handed to a person / conversations with a "
                       "question (what Gorgias calls automation rate).",
    "feedback": "👍 rate = 👍 / (👍 + 👎) over the ratings given to answers of the window's questions; rated "
                "answers = the share of answered questions that got a rating.",
    "reply_latency": "Reply latency = from the gateway receiving the message to the bot's reply being sent "
                     "(answered and refused questions; a question that waited for the files sent with it is left "
                     "out, its time is the indexing's). Median, and p95 by nearest rank: 95 % of replies were "
                     "at least this fast.",
    "first_human_reply": "Time to first human reply = from the handoff to the first reply a person sent to the "
                         "customer, over the conversations handed off in the window that got one; still waiting "
                         "= handed off and no reply yet.",
    "delivery_failures": "Messages to customers that could not be delivered (for example outside Instagram's "
                         "24-hour window), by reason and by who sent them (the bot or a person).",
    "todo": "The to-do list: questions the bot refused and answers rated 👎, grouped by the words that carry "
            "their meaning (stop words dropped, light stemming; two wordings share a group when at least half "
            "of their key words are shared). Add a document about each group's topic, or fix the one it cited.",
}


class Window(BaseModel):
    since: dt.datetime
    until: dt.datetime
    label: str  # "the last 30 days", "since 2026-11-01"


class Latency(BaseModel):
    """Percentiles of a set of durations, in milliseconds; ``count`` the values they are taken over."""

    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None


class ChannelFigures(BaseModel):
    channel: str
    conversations: int = 0
    conversations_with_questions: int = 0
    questions: int = 0
    answered: int = 0
    refused: int = 0
    handed_off: int = 0
    resolved: int = 0
    resolution_rate: float | None = None
    reply_latency: Latency = Field(default_factory=Latency)


class Resolution(BaseModel):
    resolved: int = 0
    conversations: int = 0  # with at least one question
    rate: float | None = None
    definition: str = RESOLUTION_DEFINITION


class Feedback(BaseModel):
    up: int = 0
    down: int = 0
    up_rate: float | None = None  # up / (up + down)
    rated_answers: int = 0  # answered questions with at least one rating
    rated_share: float | None = None  # rated_answers / answered


class HumanReply(BaseModel):
    handed_off: int = 0  # conversations handed off in the window
    replied: int = 0
    waiting: int = 0
    p50_seconds: float | None = None
    p95_seconds: float | None = None


class DeliveryFailureCount(BaseModel):
    reason: str
    by: str
    count: int


class TodoQuestion(BaseModel):
    message_id: str
    question: str
    channel: str
    asked_at: dt.datetime
    why: str  # refused / thumbs_down
    comments: list[str] = Field(default_factory=list)  # what raters wrote with their 👎
    sources: list[str] = Field(default_factory=list)


class TodoGroup(BaseModel):
    """Questions alike (`bot.analytics.similarity`): what to add a document about."""

    representative: str
    key_words: list[str]
    count: int
    refused: int
    thumbs_down: int
    last_asked: dt.datetime
    examples: list[str]  # the distinct wordings, most recent first (a few)
    sources: list[str]  # what the bot cited or tried for them, most often first
    comments: list[str]  # what raters wrote with their 👎
    channels: list[str]
    questions: list[TodoQuestion] = Field(default_factory=list, exclude=True)  # every member (for the CSV)


class AnalyticsReport(BaseModel):
    tenant_id: str
    window: Window
    messages: int = 0  # everything received
    conversations: int = 0  # with a message in the window
    questions: int = 0
    answered: int = 0
    refused: int = 0
    handed_off: int = 0
    with_person: int = 0  # sent while a person owned the conversation (outcome "silent")
    not_questions: int = 0  # empty, emoji-only, too long (outcome "bad_question")
    over_quota: int = 0  # not answered: the plan's questions were used up (outcome "quota_exceeded")
    other: int = 0  # no outcome recorded: files only, still being answered, failed, expired
    answered_rate: float | None = None
    refused_rate: float | None = None
    handed_off_rate: float | None = None
    handed_off_conversations: int = 0
    automation_rate: float | None = None
    resolution: Resolution = Field(default_factory=Resolution)
    feedback: Feedback = Field(default_factory=Feedback)
    reply_latency: Latency = Field(default_factory=Latency)
    channels: list[ChannelFigures] = Field(default_factory=list)
    first_human_reply: HumanReply = Field(default_factory=HumanReply)
    delivery_failures: list[DeliveryFailureCount] = Field(default_factory=list)
    todo: list[TodoGroup] = Field(default_factory=list)
    todo_questions: int = 0  # questions in the to-do list (refused + 👎'd), before grouping
    todo_truncated: bool = False  # more than the newest `TODO_LIMIT` questions were in the window
    definitions: dict[str, str] = Field(default_factory=lambda: dict(DEFINITIONS))

    @property
    def empty(self) -> bool:
        return self.messages == 0
