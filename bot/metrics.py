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

    def ack(self, channel: str, outcome: str, seconds: float) -> None:
        self.acks.labels(channel, outcome).inc()
        self.ack_seconds.labels(channel).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
