"""Instagram webhook bodies a stranger shapes: whatever sits where Meta puts objects, the parser
skips it instead of raising (a signed body with ``"sender": true`` was a 500 before)."""

from __future__ import annotations

import pytest

from bot.channels.instagram.events import documents_of, ignore_reason, messaging_events


@pytest.mark.parametrize("payload", [
    {"entry": 5}, {"entry": "x"}, {"entry": [{"id": "1", "messaging": 7}]}, {"entry": [{"messaging": {"a": 1}}]},
])
def test_entries_and_messaging_that_are_not_arrays_yield_nothing(payload: dict) -> None:
    assert list(messaging_events(payload)) == []


@pytest.mark.parametrize("sender", [True, 3, "U1", ["id"]])
def test_a_sender_that_is_not_an_object_is_an_incomplete_event(sender: object) -> None:
    # Given a message whose sender is not a JSON object
    event = {"sender": sender, "message": {"mid": "m1", "text": "hi"}}
    # Then it is ignored as incomplete instead of raising
    assert ignore_reason("17841400000000000", event) == "incomplete"


def test_attachments_of_the_wrong_shape_are_not_documents() -> None:
    message = {"attachments": [{"type": "file", "payload": True}, {"type": "file", "payload": {"url": 12}},
                               {"type": "file", "payload": {"url": "https://cdn.example/x/guide.pdf"}}]}
    assert [a.name for a in documents_of(message)] == ["guide.pdf"]
    assert documents_of({"attachments": 4}) == []
