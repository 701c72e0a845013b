"""The gateway's Prometheus metrics, in a registry of the app's own (two apps in one test process
never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ANSWER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.acks = Counter(
            "parley_gateway_webhook_acks", "Webhook requests answered, by channel and outcome.", ["channel", "outcome"], registry=r
        )
        self.ack_seconds = Histogram(
            "parley_gateway_ack_seconds", "Time from request to acknowledgement.", ["channel"], buckets=ACK_BUCKETS, registry=r
        )
        self.answers = Counter("parley_gateway_answers", "Inbound messages finished, by channel and status.",
                               ["channel", "status"], registry=r)
        self.answer_seconds = Histogram(
            "parley_gateway_answer_seconds", "Time from receipt to the reply being sent.", ["channel"],
            buckets=ANSWER_BUCKETS, registry=r,
        )
        self.notices = Counter("parley_gateway_notices", "Notices posted back into DMs.", ["channel", "outcome"], registry=r)
        self.uploads = Counter("parley_gateway_uploads", "Files received, by channel and outcome.", ["channel", "outcome"],
                               registry=r)
        # --- analytics (bot/analytics): the dashboard's figures as counters; labels stay bounded
        # (channel x outcome), never per tenant. Handoffs and feedback: `handoffs`, `feedback` below.
        self.questions = Counter("parley_gateway_questions", "Messages finished, by channel and outcome (answered, "
                                 "refused, handed_off, silent, bad_question, quota_exceeded).", ["channel", "outcome"],
                                 registry=r)
        self.in_flight = Gauge("parley_gateway_answers_in_flight", "Messages being answered now.", registry=r)
        self.recovered = Counter("parley_gateway_recovered", "Messages taken over by the recovery sweep.", registry=r)
        # --- limits (bot/limits.py) ---------------------------------------------------------
        self.limited = Counter("parley_gateway_questions_limited", "Questions refused by a rate limit, by channel and "
                               "whose bucket was empty (sender, tenant).", ["channel", "scope"], registry=r)
        self.shed = Counter("parley_gateway_answers_shed", "Questions refused because the tenant's answer backlog was full.",
                            ["channel"], registry=r)
        self.limit_notices = Counter("parley_gateway_limit_notices", "'Slow down' notices, by channel and outcome "
                                     "(sent, failed, dropped).", ["channel", "outcome"], registry=r)
        self.backlog = Gauge("parley_gateway_answer_backlog", "Messages waiting for or being answered.", registry=r)
        self.auth_failures = Counter("parley_gateway_auth_failures", "Wrong API keys, by door (api, admin_login).", ["door"],
                                     registry=r)
        self.auth_throttled = Counter("parley_gateway_auth_throttled", "Sign-in attempts refused unchecked because their "
                                      "address was locked out, by door.", ["door"], registry=r)
        # --- privacy (bot/privacy) ----------------------------------------------------------------
        self.erasures = Counter("parley_gateway_erasures", "End customers erased, by door (api, dashboard).", ["door"],
                                registry=r)
        self.retention_removed = Counter("parley_gateway_retention_removed", "Rows and files removed by the retention "
                                         "sweep, by kind (messages, turns, dead_letters, files, ...).", ["kind"],
                                         registry=r)
        # --- feedback and delivery (bot/feedback, bot/conversation/failures.py) -----------------
        self.feedback = Counter("parley_gateway_feedback", "Ratings of answers recorded (new or changed), by channel and "
                                "rating (up, down).", ["channel", "rating"], registry=r)
        self.feedback_comments = Counter("parley_gateway_feedback_comments", "Comments given with a 👎, by channel.",
                                         ["channel"], registry=r)
        self.quota_refusals = Counter("parley_gateway_quota_refusals", "Questions and uploads refused by the tenant's "
                                      "plan (tenants.quotas), by channel and resource (documents, questions_per_day, ...).",
                                      ["channel", "resource"], registry=r)
        self.delivery_failures = Counter("parley_gateway_delivery_failures", "Messages to customers that did not go out, "
                                         "by channel, reason (outside_window, graph_refused, ...) and author (bot, human).",
                                         ["channel", "reason", "by"], registry=r)
        # --- handoff to a person (bot/conversation/handoff.py) ---------------------------------
        self.handoffs = Counter("parley_gateway_handoffs", "Conversations handed to a person, by trigger (asked, keyword, "
                                "refusals, thumbs_down).", ["trigger"], registry=r)
        self.relayed = Counter("parley_gateway_handoff_relayed", "Staff replies and handoff notices sent to customers, by "
                               "channel and outcome (sent, failed).", ["channel", "outcome"], registry=r)
        self.handoff_actions = Counter("parley_gateway_handoff_actions", "Staff actions that changed a conversation (take, "
                                       "resolve, hand_back).", ["action"], registry=r)
        self.handoff_timeouts = Counter("parley_gateway_handoff_timeouts", "Handed-off conversations nobody answered in "
                                        "the tenant's time limit.", registry=r)
        self.auth_lockouts = Counter("parley_gateway_auth_lockouts", "Addresses locked out after too many wrong API keys.",
                                     registry=r)
        self.channel_changes = Counter("parley_gateway_channel_changes", "Channel connections changed on the dashboard, by "
                                       "channel and change (connected, disconnected, token_rotated, uploaders_set, refused).",
                                       ["channel", "change"], registry=r)

    def ack(self, channel: str, outcome: str, seconds: float) -> None:
        self.acks.labels(channel, outcome).inc()
        self.ack_seconds.labels(channel).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
