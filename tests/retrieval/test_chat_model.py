"""With a chat model configured (a local OpenAI-compatible server, the emulator): the answer is in
the question's language, its [n] match the citations it returns, and it refuses the way the
offline answerer does. Through the real app, the real openai SDK and the emulator's HTTP."""

from __future__ import annotations

import re

import pytest

from retrieval.answer import NOT_FOUND_MARK, TenantProfile, checked_citations, not_found_text
from retrieval.language import question_language
from retrieval.schemas import QueryRequest
from tests.retrieval.support import ChatEmulator, add_document, instructed, make_config, running_app, seed_acme

VERSAND = "# Versand\n\n## Kanada\nDer Versand nach Kanada dauert 7 bis 14 Werktage und kostet 19,95 $ pro Bestellung.\n"
SQLITE = pytest.mark.parametrize("db_backend", ["sqlite"])  # the database is not what is under test here


def chat_config(chat: ChatEmulator):  # type: ignore[no-untyped-def]
    assert chat.server is not None
    return make_config(answerer="openai", openai_base_url=str(chat.server.make_url("/v1")), openai_api_key=None,
                       openai_chat_model="llama3.2", openai_timeout=30, openai_max_retries=0, rewrite_with_llm=False)


def test_citations_past_the_passages_are_dropped_and_lists_split() -> None:
    text, cited = checked_citations("Wir versenden nach Kanada [2] in 7 bis 14 Tagen [9]. Zoll zahlt der Kunde [1, 2 ; 12].",
                                    {1, 2, 3})
    assert text == "Wir versenden nach Kanada [2] in 7 bis 14 Tagen. Zoll zahlt der Kunde [1][2]."
    assert cited == [2, 1]
    assert checked_citations("Nothing to cite [4] [5]", {1}) == ("Nothing to cite", [])


@pytest.mark.parametrize(("question", "language"), [
    ("How long does delivery to Canada take?", "English"), ("Wie lange dauert der Versand nach Kanada?", "German"),
    ("Combien de temps prend la livraison au Canada ?", "French"), ("¿Cuánto tarda el envío a Canadá?", "Spanish"),
    ("Сколько времени занимает доставка в Канаду?", "Russian"), ("カナダへの配送にはどのくらいかかりますか？", "Japanese"),
    ("Canada?", None),
])
def test_the_questions_language_is_named_when_it_can_be_told(question: str, language: str | None) -> None:
    assert question_language(question) == language


@SQLITE
async def test_the_answer_is_in_the_questions_language_with_checked_citations(rsettings, sessions, writer, emb,
                                                                               local_embedder, chat) -> None:
    # Given a tenant with a German page among its documents, and a local chat model (no API key: a base
    # URL and a model name)
    acme = await seed_acme(sessions, writer, emb)
    await add_document(sessions, writer, emb, acme, "versand.md", VERSAND)
    # that answers in German, citing a passage it was given and one that does not exist
    chat.answers = ["Der Versand nach Kanada dauert 7 bis 14 Werktage [1] und kostet 19,95 $ [7]."]
    async with running_app(rsettings, embedder=local_embedder, config=chat_config(chat)) as (_, client):
        # When a customer asks in German
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="Wie lange dauert der Versand nach Kanada?"))
    # Then the model was told to answer in German, to cite only the passages it got, and how to refuse
    [request] = chat.answer_requests
    told = instructed(request)
    assert told["language"] == "German" and told["not_found"] == NOT_FOUND_MARK
    numbered = [int(n) for n in re.findall(r"^\[(\d+)\]", request["messages"][1]["content"], re.M)]
    assert told["cite_up_to"] == max(numbered) == len(numbered)
    # And the answer is the model's German, without the [7] that pointed past the passages
    assert r.answered_by == "openai" and r.found
    assert r.answer == "Der Versand nach Kanada dauert 7 bis 14 Werktage [1] und kostet 19,95 $."
    # and every [n] in it is a citation returned, and every citation returned is cited
    assert [c.n for c in r.citations] == [1] and r.citations[0].title == "versand.md"


@SQLITE
async def test_a_model_that_finds_no_answer_refuses_like_the_offline_answerer(rsettings, sessions, writer, emb,
                                                                               local_embedder, chat) -> None:
    # Given a chat model that finds the passages do not answer the question
    acme = await seed_acme(sessions, writer, emb)
    chat.answers = [NOT_FOUND_MARK]
    async with running_app(rsettings, embedder=local_embedder, config=chat_config(chat)) as (_, client):
        r = await client.query(QueryRequest(tenant_id=acme.tenant_id, message="How long does delivery to Canada take?"))
    # Then the customer gets the offline answerer's refusal: its text, found=False, nothing cited
    profile = TenantProfile(acme.tenant_id, acme.name, "Acme Outdoor", "", 0)
    assert r.answer.startswith(not_found_text(profile)) and NOT_FOUND_MARK not in r.answer
    assert (r.found, r.citations, r.answered_by) == (False, [], "openai")
