"""Endpoint URL checks: https only, and no loopback, link-local, private, multicast or unspecified
address (nor a name resolving to one) unless the development flag allows it."""

from __future__ import annotations

import pytest

from webhooks.urls import WebhookUrlRejected, check_url


@pytest.mark.parametrize("url, why", [
    ("https://127.0.0.1/hook", "loopback"),
    ("https://[::1]/hook", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://10.1.2.3/hook", "private"),
    ("https://192.168.0.10:8443/hook", "private"),
    ("https://172.16.5.5/hook", "private"),
    ("https://[fc00::1]/hook", "private"),
    ("https://[fd12:3456::1]/hook", "private"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),
    ("https://224.0.0.1/hook", "multicast"),
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://localhost:9000/hook", "loopback"),
])
def test_internal_addresses_are_refused_without_the_dev_flag(url: str, why: str) -> None:
    # Given a URL whose host is (or resolves to) an internal address
    # When it is checked without the development flag / Then it is refused, saying what kind
    with pytest.raises(WebhookUrlRejected, match=why) as caught:
        check_url(url, allow_private=False)
    assert caught.value.code == "webhook_url_rejected"
    # And with the flag it is accepted (development receivers on this machine)
    assert check_url(url, allow_private=True).startswith("https://")


def test_https_is_required_unless_allowed() -> None:
    with pytest.raises(WebhookUrlRejected, match="must use https"):
        check_url("http://93.184.215.14/hook", allow_private=False)
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True) == "http://127.0.0.1:8080/hook"


@pytest.mark.parametrize("url, why", [
    ("", "give the endpoint's URL"),
    ("ftp://example.com/x", "must start with https://"),
    ("example.com/hook", "must start with https://"),
    ("https:///nohost", "no host"),
    ("https://user:pw@93.184.215.14/", "user name or password"),
    ("https://93.184.215.14:99999/", "not a valid URL"),
    ("https://exa mple.com/", "spaces"),
    ("https://" + "a" * 2100 + ".com/", "longer than"),
    ("https://no-such-host.invalid/hook", "does not resolve"),
])
def test_malformed_urls_get_a_readable_reason(url: str, why: str) -> None:
    with pytest.raises(WebhookUrlRejected, match=why):
        check_url(url, allow_private=False)


def test_a_public_address_is_accepted_and_normalised() -> None:
    # Given a public IP literal with an upper-case scheme and host and a fragment
    # Then it is accepted, lower-cased, without the fragment, with a path
    assert check_url("HTTPS://93.184.215.14:8443#frag", allow_private=False) == "https://93.184.215.14:8443/"
    assert check_url("https://[2606:4700::1111]/h?x=1", allow_private=False) == "https://[2606:4700::1111]/h?x=1"
