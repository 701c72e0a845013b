"""The gateway's limits (`bot.limits`): questions per sender and per tenant, the bounded answer
backlog, failed sign-ins per address, and the gateway process's slow-client protections.

Time is the gateway's injected clock (`FakeClock`), moved by hand: buckets refill and lockouts end
exactly when a test says so, never because the machine was slow."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from bot.limits import FailureThrottle, QuestionLimits, TokenBuckets, client_address, parse_networks, throttle_key
from parley.bus import RabbitBroker, Topology
from tests.bot.conftest import IG_ACCOUNT, Stack, dm, eventually
from tests.support import services
from tests.support.processes import stop_process
from tests.support.slow_clients import holds_one_connection_and_closes_it_when_idle

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SLOW_DOWN = "faster than I can answer"
BUSY = "answering a lot of messages"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()  # near the real time: Slack signatures are checked against it

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def from_user(user: str, text: str = "What is your returns policy?") -> dict[str, Any]:
    payload = dm(text)
    payload["event"]["user"] = user
    return payload


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


async def metrics_text(stack: Stack) -> str:
    return await (await stack.client.get("/metrics")).text()


# --- the limiters on their own ------------------------------------------------------------------


def test_a_bucket_gives_its_burst_then_refills_at_its_rate_and_forgets_the_stalest_key() -> None:
    # Given buckets of 2 tokens refilled at one every 10 s, remembering 2 keys
    clock = FakeClock()
    buckets = TokenBuckets(rate=0.1, burst=2, clock=clock, max_keys=2)
    # When a key takes its burst
    for _ in range(2):
        assert buckets.wait("a") == 0.0
        buckets.take("a")
    # Then it must wait 10 s for the next token, and has it when they have passed
    assert buckets.wait("a") == pytest.approx(10.0)
    clock.advance(4)
    assert buckets.wait("a") == pytest.approx(6.0)
    clock.advance(6)
    assert buckets.wait("a") == 0.0
    # And a clock that steps back adds nothing
    buckets.take("a")
    clock.advance(-100)
    assert buckets.wait("a") == pytest.approx(10.0)
    # When two more keys come, the least recently used is forgotten (memory stays bounded)
    buckets.wait("b")
    buckets.wait("c")
    assert len(buckets) == 2 and buckets.wait("a") == 0.0  # "a" comes back full


def test_a_sender_is_told_once_per_refusal_streak_and_the_tenant_bucket_is_shared() -> None:
    # Given 2 questions at once per sender, 3 per tenant, no refill within the test
    clock = FakeClock()
    limits = QuestionLimits(sender_rate=0.1, sender_burst=2, tenant_rate=0.1, tenant_burst=3, clock=clock, max_keys=100)
    # When one sender asks 4 times
    first = [limits.check("t1", "alice") for _ in range(4)]
    # Then two pass, the third is refused with a notice, the fourth in silence
    assert [v.allowed for v in first] == [True, True, False, False]
    assert [v.notify for v in first[2:]] == [True, False] and {v.scope for v in first[2:]} == {"sender"}
    assert first[2].retry_after == pytest.approx(10.0)
    # When a second sender of the same tenant asks twice, and a sender of another tenant once
    bob = [limits.check("t1", "bob") for _ in range(2)]
    other = limits.check("t2", "alice")
    # Then the tenant's third token goes to bob, his second question meets the empty tenant bucket; t2 is untouched
    assert [v.allowed for v in bob] == [True, False] and bob[1].scope == "tenant" and bob[1].notify
    assert other.allowed
    # When alice's bucket refills, she is let through and her next refusal is told again
    clock.advance(10)
    assert limits.check("t1", "alice").allowed
    again = limits.check("t1", "alice")
    assert not again.allowed and again.notify


def test_failed_sign_ins_lock_an_address_out_for_the_lockout_then_start_over() -> None:
    # Given 3 failures within 60 s lock an address out for 300 s
    clock = FakeClock()
    throttle = FailureThrottle(max_failures=3, window=60, lockout=300, clock=clock, max_keys=100)
    # When two failures are 61 s apart they do not add up
    assert not throttle.failed("192.0.2.1")
    clock.advance(61)
    assert not throttle.failed("192.0.2.1") and not throttle.failed("192.0.2.1")
    assert throttle.locked_for("192.0.2.1") == 0.0
    # When the third comes within the window, the address is locked out, another address is not
    assert throttle.failed("192.0.2.1")
    assert throttle.locked_for("192.0.2.1") == pytest.approx(300.0) and throttle.locked_for("192.0.2.2") == 0.0
    # And failures that were already on their way while it was locked do not extend the lockout
    clock.advance(100)
    assert not any(throttle.failed("192.0.2.1") for _ in range(5))
    assert throttle.locked_for("192.0.2.1") == pytest.approx(200.0)
    clock.advance(200)
    # And after the lockout it may try again
    assert throttle.locked_for("192.0.2.1") == 0.0 and not throttle.failed("192.0.2.1")


def test_attempts_still_being_checked_count_until_their_outcome_is_known() -> None:
    # Given 3 failures lock an address out
    throttle = FailureThrottle(max_failures=3, window=60, lockout=300, clock=FakeClock(), max_keys=100)
    # When an address that never failed has many attempts being checked (a client's concurrent requests)
    for _ in range(5):
        throttle.begin("192.0.2.8")
    # Then it is not held back
    assert throttle.refused_for("192.0.2.8") == 0.0
    # Given an address with one failure already counted
    throttle.failed("192.0.2.9")
    # When two attempts are being checked at once (a wave of concurrent guesses)
    throttle.begin("192.0.2.9")
    throttle.begin("192.0.2.9")
    # Then a third must wait: were both wrong, the address would be locked out
    assert throttle.refused_for("192.0.2.9") == 1.0
    # When one turns out right, the next may try; when the other turns out wrong, the two failures stand
    throttle.end("192.0.2.9", failed=False)
    assert throttle.refused_for("192.0.2.9") == 0.0
    assert not throttle.end("192.0.2.9", failed=True)
    assert throttle.refused_for("192.0.2.9") == 0.0 and throttle.locked_for("192.0.2.9") == 0.0


class _Peer:
    """What aiohttp asks a connection for: the peer's address."""

    def __init__(self, host: str) -> None:
        self.host = host

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.host, 40000) if name == "peername" else default


def test_the_client_address_is_the_peer_unless_a_trusted_proxy_forwarded_it() -> None:
    proxies = parse_networks(("10.0.0.0/8",))

    def address(peer: str, forwarded: str | None) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        return client_address(make_mocked_request("GET", "/", headers=headers, transport=_Peer(peer)), proxies)

    # A direct client's X-Forwarded-For is not believed
    assert address("198.51.100.7", "203.0.113.1") == "198.51.100.7"
    # Through a trusted proxy, the right-most hop that is not a proxy is the client, whatever it prepended
    assert address("10.0.0.2", "203.0.113.1") == "203.0.113.1"
    assert address("10.0.0.2", "1.2.3.4, 203.0.113.1, 10.0.0.9") == "203.0.113.1"
    # A garbage hop stops the walk: the proxy itself is what is known
    assert address("10.0.0.2", "not-an-address") == "10.0.0.2"
    # IPv6 clients count per /64, IPv4 ones (mapped or not) one by one
    assert throttle_key("2001:db8:1:2:aaaa::1") == throttle_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert throttle_key("::ffff:192.0.2.1") == "192.0.2.1" and throttle_key("192.0.2.1") == "192.0.2.1"


# --- through the gateway --------------------------------------------------------------------------


async def test_a_slack_sender_over_their_rate_is_acked_dropped_and_told_to_slow_down_once(make_stack) -> None:
    # Given a gateway where a sender may ask 3 questions at once, then one every 10 s
    clock = FakeClock()
    stack: Stack = await make_stack(clock=clock, sender_question_burst=3, sender_questions_per_minute=6.0)
    # When one customer sends 6 DMs at once
    statuses = [(await stack.post_slack(dm(f"Question {i}: what is your returns policy?"))).status for i in range(6)]
    await stack.settle()  # answers and notices
    posted = list(stack.slack.posted)
    # Then Slack got a 200 for every one (anything else and it retries); 3 were answered, 3 dropped unstored
    assert statuses == [200] * 6
    rows = await stack.messages(channel="slack")
    assert [r.status for r in rows] == ["answered"] * 3
    assert [r.text for r in rows] == [f"Question {i}: what is your returns policy?" for i in range(3)]
    # And the customer was told to slow down once, not three times
    assert [SLOW_DOWN in p["text"] for p in posted].count(True) == 1 and len(posted) == 4
    # When 10 s pass (one token) and the customer asks twice more
    clock.advance(10)
    for i in range(2):
        assert (await stack.post_slack(dm(f"Later question {i}?"))).status == 200
    await stack.settle()
    # Then the first is answered, the second refused, and told again (a new refusal streak)
    assert len(stack.slack.posted) == 6
    rows = await stack.messages(channel="slack")
    assert [r.status for r in rows] == ["answered"] * 4 and rows[-1].text == "Later question 0?"
    assert [SLOW_DOWN in p["text"] for p in stack.slack.posted].count(True) == 2
    # And the metrics count each refusal and notice
    text = await metrics_text(stack)
    assert 'parley_gateway_questions_limited_total{channel="slack",scope="sender"} 4.0' in text
    assert 'parley_gateway_limit_notices_total{channel="slack",outcome="sent"} 2.0' in text


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_an_instagram_batch_over_the_senders_rate_is_acked_and_answered_up_to_the_limit(make_stack) -> None:
    from tests.bot.test_instagram import envelope, text_event

    # Given a gateway where a sender may ask 2 questions at once
    stack: Stack = await make_stack(clock=FakeClock(), sender_question_burst=2)
    # When one Instagram customer's 4 messages arrive in one batch
    response = await stack.post_instagram(envelope((IG_ACCOUNT, [text_event(f"Question {i}?") for i in range(4)])))
    await stack.settle()
    # Then Meta gets its 200, 2 are answered, 2 dropped, and the customer is told to slow down once
    assert response.status == 200
    assert [r.status for r in await stack.messages(channel="instagram")] == ["answered", "answered"]
    assert [SLOW_DOWN in s["message"]["text"] for s in stack.graph.sent].count(True) == 1


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_crowd_past_the_tenants_rate_is_told_busy_within_the_tenants_notice_budget(make_stack) -> None:
    # Given a gateway where a tenant takes 2 questions at once, then one every 6 s
    stack: Stack = await make_stack(clock=FakeClock(), tenant_question_burst=2, tenant_questions_per_minute=10.0)
    # When 14 customers ask once each
    statuses = [(await stack.post_slack(from_user(f"UCROWD{i:02d}"))).status for i in range(14)]
    await stack.settle()
    # Then all are acked, 2 answered; of the 12 refused, 10 (the tenant's notice burst) are told the bot is busy
    assert statuses == [200] * 14
    assert [r.status for r in await stack.messages(channel="slack")] == ["answered", "answered"]
    notices = [p["text"] for p in stack.slack.posted if BUSY in p["text"]]
    assert len(notices) == 10 and not any(SLOW_DOWN in p["text"] for p in stack.slack.posted)
    text = await metrics_text(stack)
    assert 'parley_gateway_questions_limited_total{channel="slack",scope="tenant"} 12.0' in text
    assert 'parley_gateway_limit_notices_total{channel="slack",outcome="dropped"} 2.0' in text


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_full_answer_backlog_sheds_new_questions_with_a_notice_and_other_tenants_keep_room(make_stack) -> None:
    # Given a gateway that keeps at most 2 of a tenant's questions waiting or being answered, and a stalled retrieval
    stack: Stack = await make_stack(answer_backlog_per_tenant=2)
    stack.retrieval.gate.clear()
    try:
        # When 4 customers of the tenant ask at once
        statuses = [(await stack.post_slack(from_user(f"UCUSTOMER{i}"))).status for i in range(4)]
        await eventually(lambda: not stack.gw.answers.notices_in_flight, what="the notices sent")
        # Then all are acked, only 2 are being answered (2 tasks, not 4), and the other 2 were shed and told so
        assert statuses == [200] * 4
        assert stack.gw.answers.dispatcher.queued == 2 and not stack.gw.answers.has_room(stack.tenant_id)
        assert stack.gw.answers.has_room(stack.other_tenant_id)
        assert [BUSY in p["text"] for p in stack.slack.posted] == [True, True]
        assert 'parley_gateway_answer_backlog 2.0' in await metrics_text(stack)
    finally:
        stack.retrieval.gate.set()
    await stack.settle()
    # And once retrieval answers, the 2 taken are answered; the 2 shed were never stored
    rows = await stack.messages(channel="slack")
    assert [(r.sender_id, r.status) for r in rows] == [("UCUSTOMER0", "answered"), ("UCUSTOMER1", "answered")]
    text = await metrics_text(stack)
    assert 'parley_gateway_answers_shed_total{channel="slack"} 2.0' in text and "parley_gateway_answer_backlog 0.0" in text
    # And nothing of the tenant stays behind in the dispatcher once its answers are done
    assert stack.gw.answers.dispatcher.tenants_answering == 0


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_web_chat_answers_429_with_retry_after_past_the_keys_rate(make_stack) -> None:
    # Given a gateway where one API key may ask 2 questions at once, then one every 10 s
    clock = FakeClock()
    stack: Stack = await make_stack(clock=clock, sender_question_burst=2, sender_questions_per_minute=6.0)
    ask = {"message": "What is your returns policy?"}
    # When the key asks 3 times at once
    answers = [await stack.client.post("/api/chat", json=ask, headers=bearer(stack.api_key)) for _ in range(3)]
    # Then 2 are answered and the third is a 429 in the JSON error shape, saying when to come back
    assert [r.status for r in answers] == [200, 200, 429]
    body = await answers[2].json()
    assert body["error"] == "rate_limited" and body["retry_after"] == 10 and body["detail"]
    assert answers[2].headers["Retry-After"] == "10"
    # And nothing was stored for the refused one
    assert len(await stack.messages(channel="web")) == 2
    # When the 10 s have passed
    clock.advance(10)
    # Then the key is answered again, and another tenant's key was never limited
    assert (await stack.client.post("/api/chat", json=ask, headers=bearer(stack.api_key))).status == 200
    assert (await stack.client.post("/api/chat", json=ask, headers=bearer(stack.other_api_key))).status == 200
    assert 'parley_gateway_questions_limited_total{channel="web",scope="sender"} 1.0' in await metrics_text(stack)


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_wrong_keys_lock_the_address_out_of_the_api_and_the_dashboard_login(make_stack) -> None:
    # Given a gateway where 3 wrong keys within a minute lock an address out for 60 s
    clock = FakeClock()
    stack: Stack = await make_stack(clock=clock, auth_max_failures=3, auth_lockout=60.0)
    # When two wrong keys go to the API and one to the dashboard's login form
    wrong = [await stack.client.get("/api/documents", headers=bearer(f"pk_wrong-{i}")) for i in range(2)]
    login = await stack.client.post("/admin/login", data={"api_key": "pk_wrong-2", "next": "/admin/"}, allow_redirects=False)
    assert [r.status for r in wrong] == [401, 401] and login.status == 401
    # Then the address is locked out of both doors, even with the right key: 429, nothing checked
    api = await stack.client.get("/api/documents", headers=bearer(stack.api_key))
    relogin = await stack.client.post("/admin/login", data={"api_key": stack.api_key, "next": "/admin/"}, allow_redirects=False)
    for response in (api, relogin):
        body = await response.json()
        assert response.status == 429 and response.headers["Retry-After"] == "60", body
        assert body["error"] == "rate_limited" and body["retry_after"] == 60
    # When the lockout is over
    clock.advance(60)
    # Then the right key works again
    assert (await stack.client.get("/api/documents", headers=bearer(stack.api_key))).status == 200
    ok = await stack.client.post("/admin/login", data={"api_key": stack.api_key, "next": "/admin/"}, allow_redirects=False)
    assert ok.status == 303
    text = await metrics_text(stack)
    assert 'parley_gateway_auth_failures_total{door="api"} 2.0' in text
    assert 'parley_gateway_auth_failures_total{door="admin_login"} 1.0' in text
    assert 'parley_gateway_auth_throttled_total{door="api"} 1.0' in text
    assert 'parley_gateway_auth_throttled_total{door="admin_login"} 1.0' in text
    assert "parley_gateway_auth_lockouts_total 1.0" in text


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_behind_a_trusted_proxy_each_forwarded_client_is_throttled_on_its_own(make_stack) -> None:
    # Given a gateway behind a proxy on 127.0.0.1, where 2 wrong keys lock an address out
    proxied: Stack = await make_stack(trusted_proxies=("127.0.0.1/32",), auth_max_failures=2)
    attacker, customer = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "198.51.100.8"}
    # When one forwarded client sends two wrong keys
    for i in range(2):
        assert (await proxied.client.get("/api/documents", headers=bearer(f"pk_guess-{i}", **attacker))).status == 401
    # Then that client is locked out, even when it prepends a made-up hop, and another client is not
    spoofed = {"X-Forwarded-For": "203.0.113.99, 198.51.100.7"}
    assert (await proxied.client.get("/api/documents", headers=bearer(proxied.api_key, **spoofed))).status == 429
    assert (await proxied.client.get("/api/documents", headers=bearer(proxied.api_key, **customer))).status == 200
    # Given a gateway with no trusted proxy: a client cannot escape its lockout with X-Forwarded-For
    direct: Stack = await make_stack(auth_max_failures=2, deps={"consume_notifications": False, "recover_on_start": False})
    for i in range(2):
        await direct.client.get("/api/documents", headers=bearer(f"pk_guess-{i}", **attacker))
    assert (await direct.client.get("/api/documents", headers=bearer(direct.api_key, **customer))).status == 429


# --- the gateway process and slow clients ---------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_gateway_process_closes_idle_connections_and_refuses_past_its_cap(db_url: str, tmp_path: Path) -> None:
    # Given `parley gateway` in its own process, allowed one connection, whose request heads must come within 5 s
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    prefix = f"tl{uuid.uuid4().hex[:8]}."
    env.update(PARLEY_DATABASE_URL=db_url, PARLEY_DATA_DIR=str(tmp_path / "var"), PARLEY_GATEWAY_PORT=str(port),
               PARLEY_AMQP_URL=services.AMQP_URL, PARLEY_AMQP_PREFIX=prefix, PARLEY_HTTP_MAX_CONNECTIONS="1",
               PARLEY_HTTP_HEADER_TIMEOUT="5", PARLEY_LOG_JSON="true")
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "gateway"], env=env, stdout=out, stderr=out,
                                cwd=Path(__file__).resolve().parents[2])
    try:
        async def listening() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(listening, timeout=60, what="the gateway listening")
        # When one client holds a connection and a second connects
        refusal = await holds_one_connection_and_closes_it_when_idle("127.0.0.1", port)
        # Then (checked there) the second got 503 and the idle first was closed by the gateway
        assert b"Retry-After: 1" in refusal
    finally:
        await asyncio.to_thread(stop_process, proc, timeout=30)
        cleaner = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix), connection_name=f"{prefix}cleanup")
        await cleaner.start()
        await cleaner.delete_topology()
        await cleaner.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
