"""The README's webhook example stays true: its delivery verifies with its secret, both with the
README's own Python snippet and with `parley.webhook_signing.verify`, and a changed body does not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parley.webhook_signing import WebhookVerificationError, verify

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README.split("### Webhooks", 1)[1].split("\n### ", 1)[0]


def _example() -> tuple[str, dict[str, str], bytes]:
    http = SECTION.split("```http\n", 1)[1].split("```", 1)[0]
    head, body = http.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    secret = re.search(r"signed with the secret `(whsec_[^`]+)`", SECTION).group(1)  # type: ignore[union-attr]
    return secret, headers, body.strip().encode()


def _snippet() -> dict[str, object]:
    code = SECTION.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README's snippet
    return namespace


def test_the_example_delivery_verifies_with_the_readme_snippet_and_ours() -> None:
    # Given the README's example delivery and the secret it names
    secret, headers, body = _example()
    now = int(headers["webhook-timestamp"])
    # When verified by the README's snippet and by parley.webhook_signing / Then both accept it
    _snippet()["verify"](secret, headers, body, now=now)  # type: ignore[operator]
    verify(secret, headers, body, now=now)
    # And a changed body is refused by both
    with pytest.raises(ValueError, match="no signature matches"):
        _snippet()["verify"](secret, headers, body.replace(b"returns.md", b"refunds.md"), now=now)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body.replace(b"returns.md", b"refunds.md"), now=now)
