"""The gateway's limits: questions per sender and per tenant, the answer backlog, failed sign-ins.

Questions (every DM and web-chat message) pass two token buckets before they are answered: the
sender's (a Slack or Instagram user, a web-chat API key; keyed by tenant and sender) and the
tenant's. Past either, or when the tenant already has ``answer_backlog_per_tenant`` questions
waiting or being answered in this gateway (``answer_backlog_total`` for all tenants), the question
is refused:

* a DM is acked 200 - Slack and Meta retry anything else - and dropped: not stored, not answered
  (a flood costs no row and no task per message, only the signature check and the bucket); the
  first refusal since the sender was last let through gets one polite notice ("slow down" when it
  was their own rate, "busy, ask again in a minute" when it was the tenant's), later ones get
  silence until they are let through again. Notices are themselves limited per tenant (10 at
  once, then one every 5 s), so a crowd of senders cannot turn a flood into as many replies;
* the web chat answers 429 ``{"error": "rate_limited", "detail", "retry_after"}`` with ``Retry-After``.

Sign-in (``Authorization: Bearer`` on the web API and the dashboard's login form) counts wrong keys
per client address: ``auth_max_failures`` within ``auth_failure_window`` seconds lock the address
out for ``auth_lockout`` seconds, during which every attempt is refused with a 429 before any key
is looked at. Once an address has failed, its attempts still being checked count as failures
until their outcome is known, so a wave of concurrent guesses gets little further than
``auth_max_failures`` of them. The client address is the connection's peer, or, from a trusted reverse proxy, the
right-most ``X-Forwarded-For`` entry that is not one; IPv6 addresses count per /64 (one host has
a whole /64 to pick from).

Every limiter keeps at most ``limiter_max_keys`` keys (least recently seen forgotten first, coming
back fresh), so memory stays bounded whatever senders or addresses a flood makes up. Time comes
from the gateway's injected clock, so tests refill the buckets by moving it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from bot.conversation.schemas import IncomingMessage
from bot.metrics import GatewayMetrics
from parley.errors import ConfigurationError, RateLimited

if TYPE_CHECKING:
    from bot.answering import AnswerLoop
    from bot.config import GatewayConfig

log = logging.getLogger("parley.gateway.limits")

Clock = Callable[[], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: When a full backlog will have room is not known; this is what the refusal suggests.
BACKLOG_RETRY_AFTER = 30.0
#: Notices per tenant: this many at once, then one every NOTICE_INTERVAL seconds.
NOTICE_BURST, NOTICE_INTERVAL = 10, 5.0


class TokenBuckets:
    """One token bucket per key: at most ``burst`` tokens, ``rate`` new ones a second (read from
    ``clock``). At most ``max_keys`` buckets are kept, the least recently used forgotten first."""

    def __init__(self, *, rate: float, burst: float, clock: Clock, max_keys: int) -> None:
        self.rate, self.burst, self.clock, self.max_keys = rate, float(burst), clock, max_keys
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()  # key -> [tokens, as of]

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: Hashable) -> list[float]:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)  # a clock step back adds nothing
            bucket[1] = now
        return bucket

    def wait(self, key: Hashable) -> float:
        """Seconds until the key has a token (0.0: it has one now)."""
        tokens = self._bucket(key)[0]
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: Hashable) -> None:
        self._bucket(key)[0] -= 1.0


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    scope: str = ""  # sender / tenant / backlog
    retry_after: float = 0.0
    #: The first refusal since this sender was last let through: tell them, once.
    notify: bool = False
    reason: str | None = None


ALLOWED = Verdict(True)


class QuestionLimits:
    """The sender's and the tenant's buckets, and who has been told to slow down."""

    def __init__(self, *, sender_rate: float, sender_burst: int, tenant_rate: float, tenant_burst: int, clock: Clock,
                 max_keys: int) -> None:
        self.senders = TokenBuckets(rate=sender_rate, burst=sender_burst, clock=clock, max_keys=max_keys)
        self.tenants = TokenBuckets(rate=tenant_rate, burst=tenant_burst, clock=clock, max_keys=max_keys)
        self.max_keys = max_keys
        self._told: OrderedDict[tuple[str, str], None] = OrderedDict()

    def check(self, tenant_id: str, sender_id: str) -> Verdict:
        """Let the question through (taking a token from both buckets) or refuse it."""
        key = (tenant_id, sender_id)
        wait, scope = self.senders.wait(key), "sender"
        if not wait:
            wait, scope = self.tenants.wait(tenant_id), "tenant"
        if not wait:
            self.senders.take(key)
            self.tenants.take(tenant_id)
            self._told.pop(key, None)
            return ALLOWED
        who = "you are" if scope == "sender" else "this tenant's customers are"
        return self.refuse(tenant_id, sender_id, scope, wait, f"rate limited: {who} asking faster than allowed")

    def refuse(self, tenant_id: str, sender_id: str, scope: str, retry_after: float, reason: str) -> Verdict:
        """A refusal, with ``notify`` only the first time since the sender was last let through."""
        key = (tenant_id, sender_id)
        notify = key not in self._told
        self._told[key] = None
        self._told.move_to_end(key)
        if len(self._told) > self.max_keys:
            self._told.popitem(last=False)
        return Verdict(False, scope, retry_after, notify, reason)


class FailureThrottle:
    """Failed sign-ins per address: ``max_failures`` within ``window`` seconds lock the address out
    for ``lockout`` seconds. Attempts still being checked count as failures until they are known
    (`begin` .. `end`), so a wave of concurrent guesses cannot all get past the check before the
    first of them fails. At most ``max_keys`` addresses are remembered (least recently seen
    forgotten first)."""

    def __init__(self, *, max_failures: int, window: float, lockout: float, clock: Clock, max_keys: int) -> None:
        self.max_failures, self.window, self.lockout, self.clock, self.max_keys = max_failures, window, lockout, clock, max_keys
        # address -> [window start, failures, locked until, attempts being checked]
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def _entry(self, address: str, now: float) -> list[float]:
        entry = self._seen.get(address)
        if entry is None:
            entry = self._seen[address] = [now, 0.0, 0.0, 0.0]
            if len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(address)
            if now - entry[0] > self.window:
                entry[0], entry[1] = now, 0.0
        return entry

    def refused_for(self, address: str) -> float:
        """Seconds before the address may try (0.0: now): its lockout, or 1 s while an address that
        has failed already has as many attempts being checked as it has failures left (an address
        that has not failed is never held back: a client's concurrent requests with its right key)."""
        entry = self._seen.get(address)
        if entry is None:
            return 0.0
        now = self.clock()
        if entry[2] > now:
            return entry[2] - now
        failures = entry[1] if now - entry[0] <= self.window else 0.0
        return 1.0 if failures and failures + entry[3] >= self.max_failures else 0.0

    def locked_for(self, address: str) -> float:
        """Seconds the address stays locked out (0.0: it is not)."""
        entry = self._seen.get(address)
        return max(0.0, entry[2] - self.clock()) if entry is not None else 0.0

    def begin(self, address: str) -> None:
        self._entry(address, self.clock())[3] += 1

    def end(self, address: str, *, failed: bool) -> bool:
        """An attempt's outcome; True when its failure locks the address out."""
        now = self.clock()
        entry = self._entry(address, now)
        entry[3] = max(0.0, entry[3] - 1)
        return self.failed(address) if failed else False

    def failed(self, address: str) -> bool:
        """Count one failure; True when it locks the address out."""
        now = self.clock()
        entry = self._entry(address, now)
        if entry[2] > now:  # already locked out: nothing more to count
            return False
        entry[1] += 1
        if entry[1] < self.max_failures:
            return False
        entry[0], entry[1], entry[2] = now, 0.0, now + self.lockout
        return True


def parse_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise ConfigurationError(f"PARLEY_GATEWAY_TRUSTED_PROXIES: {exc}") from exc


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(request: web.Request, trusted: tuple[Network, ...]) -> str:
    """Who is asking: the peer, or behind trusted proxies the right-most untrusted X-Forwarded-For hop."""
    peer = request.remote or "unknown"
    ip = _ip(peer)
    if not trusted or ip is None or not any(ip in net for net in trusted):
        return peer
    hops = [h for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        hop_ip = _ip(hop)
        if hop_ip is None:  # not an address: nothing left of it can be believed
            break
        if not any(hop_ip in net for net in trusted):
            return str(hop_ip)
    return peer


def throttle_key(address: str) -> str:
    """IPv4 addresses count one by one, IPv6 ones per /64."""
    ip = _ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _about(seconds: float) -> str:
    if seconds < 10:
        return "a few seconds"
    if seconds < 90:
        return f"about {math.ceil(seconds / 5) * 5:.0f} seconds"
    return f"about {math.ceil(seconds / 60):.0f} minutes"


def notice_text(verdict: Verdict) -> str:
    if verdict.scope != "sender":  # the tenant's rate or backlog: not this sender's doing
        return "I'm answering a lot of messages right now and couldn't take this one. Please ask again in a minute."
    return (f"You're sending messages faster than I can answer, so I'll skip new ones for {_about(verdict.retry_after)}. "
            "Please send your question again after that.")


class GatewayLimits:
    """What the gateway's doors consult (``gw.limits``)."""

    def __init__(self, config: GatewayConfig, *, clock: Clock, metrics: GatewayMetrics) -> None:
        self.config, self.metrics = config, metrics
        self.questions = QuestionLimits(
            sender_rate=config.sender_questions_per_minute / 60, sender_burst=config.sender_question_burst,
            tenant_rate=config.tenant_questions_per_minute / 60, tenant_burst=config.tenant_question_burst,
            clock=clock, max_keys=config.limiter_max_keys,
        )
        self.sign_in_throttle = FailureThrottle(max_failures=config.auth_max_failures, window=config.auth_failure_window,
                                                lockout=config.auth_lockout, clock=clock, max_keys=config.limiter_max_keys)
        self.proxies = parse_networks(config.trusted_proxies)
        self.notices = TokenBuckets(rate=1 / NOTICE_INTERVAL, burst=NOTICE_BURST, clock=clock, max_keys=config.limiter_max_keys)
        #: New anonymous widget sessions per client address (a visitor is a sender: a fresh session
        #: would be a fresh bucket, so opening them is limited too).
        self.visitor_sessions = TokenBuckets(rate=config.widget_sessions_per_minute / 60, burst=config.widget_session_burst,
                                             clock=clock, max_keys=config.limiter_max_keys)

    def new_visitor(self, request: web.Request) -> None:
        """A widget visitor session may be opened from this address, or `RateLimited`."""
        address = self.address(request)
        wait = self.visitor_sessions.wait(address)
        if wait:
            self.metrics.limited.labels("web", "visitor_sessions").inc()
            raise RateLimited("too many new chat sessions from your address; wait a moment and reload", retry_after=wait)
        self.visitor_sessions.take(address)

    # --- questions ----------------------------------------------------------------------------
    def admit(self, incoming: IncomingMessage, answers: AnswerLoop) -> Verdict:
        """May this question be answered? A full backlog refuses it before any token is spent."""
        if not answers.has_room(incoming.tenant_id):
            return self.questions.refuse(incoming.tenant_id, incoming.sender_id, "backlog", BACKLOG_RETRY_AFTER,
                                         "shed: too many questions are waiting for an answer")
        return self.questions.check(incoming.tenant_id, incoming.sender_id)

    def refused(self, incoming: IncomingMessage, verdict: Verdict, answers: AnswerLoop) -> None:
        """Count a refused question, and tell the sender if it is their first refusal (and the
        tenant's notices allow)."""
        if verdict.scope == "backlog":
            self.metrics.shed.labels(incoming.channel).inc()
        else:
            self.metrics.limited.labels(incoming.channel, verdict.scope).inc()
        if not verdict.notify or incoming.channel == "web":  # the web chat says it in its 429
            return
        log.info("question refused (%s: %s); the sender is told once", verdict.scope, verdict.reason,
                 extra={"tenant_id": incoming.tenant_id, "channel": incoming.channel})
        if self.notices.wait(incoming.tenant_id) or not answers.tell(incoming.tenant_id, incoming.channel, incoming.route,
                                                                     notice_text(verdict)):
            self.metrics.limit_notices.labels(incoming.channel, "dropped").inc()
            return
        self.notices.take(incoming.tenant_id)

    def check_question(self, incoming: IncomingMessage, answers: AnswerLoop) -> None:
        """For doors that answer in the response (the web chat): `RateLimited` when refused."""
        verdict = self.admit(incoming, answers)
        if verdict.allowed:
            return
        self.refused(incoming, verdict, answers)
        if verdict.scope == "backlog":
            raise RateLimited("too many questions are waiting for an answer; ask again in a moment",
                              retry_after=verdict.retry_after)
        visitor = incoming.sender_id.startswith("visitor:")  # a widget visitor (bot.channels.web.widget)
        who = ("you are" if visitor else "this API key is") if verdict.scope == "sender" else "this tenant is"
        raise RateLimited(f"{who} asking faster than allowed; wait before asking again", retry_after=verdict.retry_after)

    # --- sign-in ------------------------------------------------------------------------------
    def address(self, request: web.Request) -> str:
        return throttle_key(client_address(request, self.proxies))

    @contextlib.contextmanager
    def sign_in(self, request: web.Request, door: str) -> Iterator[SignIn]:
        """One sign-in attempt: `RateLimited` at once while the address is locked out (or has as many
        attempts being checked as failures left); otherwise the caller checks the key and calls
        ``attempt.failed()`` when it is wrong."""
        address = self.address(request)
        wait = self.sign_in_throttle.refused_for(address)
        if wait > 0:
            self.metrics.auth_throttled.labels(door).inc()
            raise RateLimited("too many wrong API keys from your address; try again later", retry_after=wait)
        attempt = SignIn()
        self.sign_in_throttle.begin(address)
        try:
            yield attempt
        finally:
            if attempt.wrong:
                self.metrics.auth_failures.labels(door).inc()
            if self.sign_in_throttle.end(address, failed=attempt.wrong):
                self.metrics.auth_lockouts.inc()
                log.warning("address locked out after %d wrong API keys", self.sign_in_throttle.max_failures,
                            extra={"address": address, "door": door, "lockout_seconds": self.sign_in_throttle.lockout})


class SignIn:
    """One sign-in attempt in progress (`GatewayLimits.sign_in`)."""

    def __init__(self) -> None:
        self.wrong = False

    def failed(self) -> None:
        self.wrong = True
