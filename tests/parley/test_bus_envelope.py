"""Envelope, headers and topology policies (no broker needed)."""

from __future__ import annotations

import datetime as dt

import pydantic
import pytest

from parley.bus import Envelope, Failure, Outgoing, Permanent, Retryable, Topology, context
from parley.bus.envelope import H_ATTEMPT, H_TENANT
from parley.errors import InvalidInput, Unavailable


class Uploaded(pydantic.BaseModel):
    document_id: str
    size: int


def test_envelope_round_trips_through_json_bytes() -> None:
    # Given an envelope with a typed payload
    envelope = Envelope.new("document.uploaded", tenant_id="t1", payload=Uploaded(document_id="d1", size=3))
    # When it goes over the wire and back
    back = Envelope.from_bytes(envelope.to_bytes())
    # Then nothing changed, and the defaults were filled
    assert back == envelope
    assert back.idempotency_key == envelope.id
    assert back.attempt == 1
    assert back.occurred_at.tzinfo is not None and back.occurred_at.utcoffset() == dt.timedelta(0)
    assert back.payload_as(Uploaded) == Uploaded(document_id="d1", size=3)
    assert back.next_attempt().attempt == 2 and back.next_attempt().id == back.id


def test_envelope_inherits_the_bound_correlation_id() -> None:
    with context.bind(correlation_id="corr-1"):
        inside = Envelope.new("notice.requested", tenant_id=None)
    outside = Envelope.new("notice.requested", tenant_id=None)
    assert inside.correlation_id == "corr-1"
    assert outside.correlation_id and outside.correlation_id != "corr-1"


@pytest.mark.parametrize("bad", ["uploaded", "Document.Uploaded", "document uploaded", "document.", ".x"])
def test_envelope_type_is_dotted_lowercase(bad: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        Envelope.new(bad, tenant_id=None)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = b'{"type":"catalog.sync_requested","id":"m1","tenant_id":"t","payload":{},"added_later":1}'
    assert Envelope.from_bytes(raw).id == "m1"


def test_outgoing_carries_ids_in_properties_and_headers() -> None:
    envelope = Envelope.new("document.uploaded", tenant_id="t9", correlation_id="c9")
    out = Outgoing.of(envelope, headers={"x-parley-replay-of": "m0"}, priority=4)
    assert (out.message_id, out.correlation_id, out.type, out.priority) == (envelope.id, "c9", "document.uploaded", 4)
    assert out.headers == {"x-parley-replay-of": "m0", H_ATTEMPT: 1, H_TENANT: "t9"}


def test_failures_map_the_error_hierarchy() -> None:
    assert Failure.of(Unavailable("db down")).retryable
    assert Failure.of(Retryable("vendor 503")).retryable
    assert not Failure.of(InvalidInput("bad pdf")).retryable
    assert not Failure.of(Permanent("nope")).retryable
    unknown = Failure.of(KeyError("x"))
    assert unknown.retryable and unknown.reason == "KeyError: 'x'"
    assert Failure.of(Unavailable("db down")).reason == "unavailable: db down"
    exhausted = unknown.exhausted(5)
    assert not exhausted.retryable and exhausted.reason == "gave up after 5 attempts; last error: KeyError: 'x'"


def test_a_failure_reads_as_a_person_would_say_it() -> None:
    # Given a parser's refusal, once as it happened and once after the attempts ran out
    encrypted = Failure.of(Permanent("PDF is password-protected", code="pdf_encrypted"))
    # Then the person reads the sentence, not the code or the retry bookkeeping
    assert encrypted.human_reason() == "PDF is password-protected"
    assert encrypted.exhausted(5).human_reason() == "PDF is password-protected"
    assert Failure.of(KeyError("x")).human_reason() == "KeyError: 'x'"


def test_delay_tiers_and_priorities() -> None:
    topology = Topology(delays=(1, 5, 30, 300))
    assert [topology.pick_delay(s) for s in (0.2, 1, 4.9, 5, 29, 31, 10_000)] == [1, 1, 1, 5, 5, 30, 300]
    assert [topology.priority_for(n) for n in (0, 1, 8, 9, 10, 500)] == [9, 8, 1, 0, 0, 0]
    assert topology.delay_queue(0.05) == "parley.delay.50ms"
    with pytest.raises(ValueError):
        Topology(delays=(5, 1))
    with pytest.raises(ValueError):
        topology.queue("nope")
