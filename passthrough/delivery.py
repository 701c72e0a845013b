"""Posting a pass-through result to its webhook endpoint, signed the Standard Webhooks way.

One run tries ``attempts`` times, ``pause`` seconds before the second try and doubling after, with
the same body and ``webhook-id`` and a fresh ``webhook-timestamp`` and signature each time. Any 2xx
is a delivery; anything else (another status, a redirect: never followed, a timeout, a refused
connection) is a failed attempt, described by its status code or the kind of network error only:
never by what the endpoint answered, which may echo what it was sent.

Why a short loop in memory and then the bus: a receiver that blinks (a deploy, a 502 from its
proxy) is usually back within seconds, and retrying from memory costs nothing. One that stays
down for minutes is retried by the bus's delay tiers (a run each, `PARLEY_MAX_ATTEMPTS` runs),
each extracting again from the sealed upload (extraction and embedding are deterministic): a
result is never held in memory, in the database or on disk while it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from parley.errors import ParleyError
from parley.webhook_signing import headers_for


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status_code: int | None = None
    error_code: str | None = None
    #: A reason a person reads, naming no content: "the endpoint answered HTTP 500".
    error: str | None = None


async def post_once(http: aiohttp.ClientSession, url: str, *, secrets: list[str], msg_id: str, body: bytes,
                    timeout: float) -> Attempt:
    headers = {"Content-Type": "application/json", **headers_for(secrets, msg_id, body)}
    try:
        async with http.post(url, data=body, headers=headers, allow_redirects=False,
                             timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            status = response.status
            await response.content.read(4096)  # a little of it, unkept, so the connection can be reused
    except TimeoutError:
        return Attempt(False, None, "webhook_timeout", f"the endpoint did not answer within {timeout:g} s")
    except aiohttp.ClientConnectorError:
        return Attempt(False, None, "webhook_unreachable", "the endpoint could not be reached (connection refused or no route)")
    except aiohttp.ClientError as exc:
        return Attempt(False, None, "webhook_unreachable", f"the connection to the endpoint failed ({type(exc).__name__})")
    except ParleyError as exc:  # the connector's resolver refused the address (webhooks.delivery.PublicOnlyResolver)
        return Attempt(False, None, exc.code, exc.message)
    if 200 <= status < 300:
        return Attempt(True, status)
    if 300 <= status < 400:
        return Attempt(False, status, "webhook_redirected", f"the endpoint answered HTTP {status} (a redirect, not followed)")
    return Attempt(False, status, "webhook_failed", f"the endpoint answered HTTP {status}")


async def deliver(http: aiohttp.ClientSession, url: str, *, secrets: list[str], msg_id: str, body: bytes,
                  attempts: int, pause: float, timeout: float,
                  on_attempt: Callable[[Attempt], Awaitable[None]] | None = None) -> Attempt:
    """Up to ``attempts`` posts; the first success, or the last failure."""
    last = Attempt(False, None, "webhook_failed", "not attempted")
    for n in range(max(1, attempts)):
        if n:
            await asyncio.sleep(pause * 2 ** (n - 1))
        last = await post_once(http, url, secrets=secrets, msg_id=msg_id, body=body, timeout=timeout)
        if on_attempt is not None:
            await on_attempt(last)
        if last.ok:
            break
    return last
