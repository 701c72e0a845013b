"""The gateway's file-download policy (bot/channels/downloads.py): which links may be fetched, that
a name resolving into our network is refused, and that redirects are checked hop by hop with the
token kept to the first origin. Through the real gateway: test_slack_files.py, test_instagram.py."""

from __future__ import annotations

import aiohttp
import pytest

from bot.channels.downloads import (
    META_FILE_HOSTS,
    SLACK_FILE_HOSTS,
    Downloader,
    DownloadRefused,
    FilePolicy,
    is_public,
)
from tests.bot.file_hosts import FileHost

TIMEOUT = aiohttp.ClientTimeout(total=10)


def _allowed(policy: FilePolicy, url: str) -> bool:
    try:
        policy.check(url)
    except DownloadRefused:
        return False
    return True


def test_only_https_to_the_vendors_file_hosts_or_the_configured_api_origin() -> None:
    # Given the production policies: Slack's API at https://slack.com/api/, Instagram's Graph API
    slack = FilePolicy.of("Slack", SLACK_FILE_HOSTS, "https://slack.com/api/")
    meta = FilePolicy.of("Instagram", META_FILE_HOSTS, "https://graph.instagram.com")
    # Then these links may be fetched ...
    assert all(_allowed(slack, u) for u in (
        "https://files.slack.com/files-pri/T1-F1/download/a.pdf", "https://slack.com/files-pri/T1-F1/a.pdf"))
    assert all(_allowed(meta, u) for u in (
        "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1&signature=x",
        "https://scontent-arn2-1.cdninstagram.com/v/t51/a.jpg", "https://scontent.xx.fbcdn.net/v/a.pdf"))
    # ... and none of these: http, another port, look-alike hosts, credentials in the link, other schemes
    assert not any(_allowed(slack, u) for u in (
        "http://slack.com/files-pri/a.pdf", "http://files.slack.com/a.pdf", "https://slack.com:8443/a.pdf",
        "https://files.slack.com.evil.example/a.pdf", "https://evil.example/files.slack.com/a.pdf",
        "https://user:pw@files.slack.com/a.pdf", "ftp://files.slack.com/a.pdf", "https://127.0.0.1/a.pdf",
        "file:///etc/passwd", "not a link"))
    assert not any(_allowed(meta, u) for u in (
        "http://lookaside.fbsbx.com/a", "https://fbsbx.com.evil.example/a", "https://169.254.169.254/latest/meta-data",
        "https://graph.instagram.com:444/a", "https://files.slack.com/a.pdf"))


def test_addresses_inside_any_network_are_not_public() -> None:
    private = ["127.0.0.1", "10.0.0.7", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
               "224.0.1.1", "::1", "fe80::1%eth0", "fd00::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::"]
    assert [a for a in private if is_public(a)] == []
    assert all(is_public(a) for a in ("157.240.1.1", "2a03:2880:f000::1"))


async def test_a_name_that_resolves_to_loopback_is_refused_before_connecting() -> None:
    # Given a policy whose allowed host is a name that resolves to 127.0.0.1 (a vendor name, rebound)
    policy = FilePolicy("Test", ("localhost",))
    downloads = Downloader()
    try:
        # When a link on it is opened
        with pytest.raises(DownloadRefused) as refused:
            async with downloads.open("https://localhost/files/a.pdf", policy=policy, timeout=TIMEOUT):
                pass
    finally:
        await downloads.close()
    # Then the resolved address is refused, by name
    assert "localhost resolves to a private address (" in refused.value.message
    assert "127.0.0.1" in refused.value.message


async def test_a_redirect_out_of_the_allowed_origins_is_not_followed() -> None:
    # Given an allowed origin that redirects to a server on another port of the same host
    start, elsewhere = await FileHost().start(), await FileHost().start()
    elsewhere.files["secret.txt"] = (b"internal", "text/plain")
    start.redirects["a.txt"] = elsewhere.url("secret.txt")
    policy = FilePolicy.of("Test", (), start.url("/"))
    downloads = Downloader(trusted_urls=[start.url("/")])
    try:
        # When the link is opened
        with pytest.raises(DownloadRefused) as refused:
            async with downloads.open(start.url("a.txt"), policy=policy, timeout=TIMEOUT, token="xoxb-secret"):
                pass
    finally:
        await downloads.close()
        await start.close()
        await elsewhere.close()
    # Then the redirect's target is never asked
    assert "not https" in refused.value.message
    assert [s.path for s in start.seen] == ["a.txt"] and elsewhere.seen == []


async def test_the_token_stays_with_the_first_origin_across_redirects() -> None:
    # Given two allowed origins; the first redirects within itself, then to the second
    first, second = await FileHost().start(), await FileHost().start()
    first.redirects["a.txt"] = first.url("b.txt")
    first.redirects["b.txt"] = second.url("c.txt")
    second.files["c.txt"] = (b"the file", "text/plain")
    policy = FilePolicy.of("Test", (), first.url("/"), second.url("/"))
    downloads = Downloader(trusted_urls=[first.url("/"), second.url("/")])
    try:
        # When the link is opened with a token
        async with downloads.open(first.url("a.txt"), policy=policy, timeout=TIMEOUT, token="xoxb-secret") as resp:
            body = await resp.read()
    finally:
        await downloads.close()
        await first.close()
        await second.close()
    # Then the file arrives; the first origin saw the token on both hops, the second never did
    assert body == b"the file"
    assert [(s.path, s.authorization) for s in first.seen] == [("a.txt", "Bearer xoxb-secret"), ("b.txt", "Bearer xoxb-secret")]
    assert [(s.path, s.authorization) for s in second.seen] == [("c.txt", None)]
