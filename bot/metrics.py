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
        self.auth_lockouts = Counter("parley_gateway_auth_lockouts", "Addresses locked out after too many wrong API keys.",
                                     registry=r)

    def ack(self, channel: str, outcome: str, seconds: float) -> None:
        self.acks.labels(channel, outcome).inc()
        self.ack_seconds.labels(channel).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
