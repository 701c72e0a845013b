"""`parley eval --tenant T FILE.jsonl`: test a tenant's agent on its own questions before customers do.

Each line of the file is a question with what a right answer holds (``facts``), the document or
product it should cite first (``source``), or ``"refuse": true`` when the documents do not cover it
(the format and the figures: `retrieval.evaluation`, which `bench/answer_quality.py` uses too).
Every question is asked the way `parley ask` asks: the running retrieval service, or the same
service built in this process when none is running (or with ``--local``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import click

from cli.app import Ctx, database, emit, main, out, run_async

EXAMPLE = "parley eval --tenant acme questions.jsonl"


@contextlib.asynccontextmanager
async def _in_process(settings: Any) -> AsyncIterator[Callable[[Any], Awaitable[Any]]]:
    """The retrieval service built in this process (no listening socket), for as many questions as needed."""
    from aiohttp import web

    from retrieval.app import create_app
    from retrieval.client import InProcessRetrievalClient
    from retrieval.routes import SERVICE

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        yield InProcessRetrievalClient(app[SERVICE]).query
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _asker(settings: Any, local: bool, probe: Any) -> AsyncIterator[Callable[[Any], Awaitable[Any]]]:
    """The running service when it answers ``probe``; otherwise (or ``local``) one in this process."""
    if not local:
        from cli.running import running_retrieval

        async with running_retrieval(settings, probe) as found:
            if found is not None:
                yield found[0].query
                return
    async with _in_process(settings) as ask:
        yield ask


@main.command("eval", section="knowledge", example=EXAMPLE)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--local", is_flag=True, help="Answer in this process instead of asking the running retrieval service.")
@click.option("--show", type=click.Choice(["failures", "all", "none"]), default="failures", show_default=True,
              help="Which questions to print with their answers after the figures.")
@click.pass_obj
@run_async
async def eval_command(ctx: Ctx, file: str, tenant_name: str, local: bool, show: str) -> None:
    """Ask a tenant's agent every question of FILE (JSON Lines) and report how it did: the fact in
    the answer, the right source cited first, correct and false refusals, answer length.

    One question a line, with the facts a right answer holds, the file or product it should cite
    first, or "refuse": true when the documents do not cover it:

    \b
    {"question": "What is the return window?", "facts": ["30 days"], "source": "returns.md"}
    {"question": "Do you ship to Mars?", "refuse": true}

    A malformed line stops it before anything is asked, naming the line.
    """
    from retrieval import evaluation
    from retrieval.repository import document_names
    from retrieval.schemas import QueryRequest

    cases = evaluation.read_cases(file)
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)

        def request(question: str) -> QueryRequest:
            return QueryRequest(tenant_id=tenant.id, conversation_id="eval", message=question)

        async with _asker(ctx.settings, local, request(cases[0].question)) as query:
            report = await evaluation.evaluate(
                cases, lambda q: query(request(q)), lambda ids: document_names(db.sessions, tenant.id, ids))
    if ctx.as_json:
        click.echo(evaluation.report_json(report))
        return
    emit(ctx, evaluation.summary_rows(report.figures()), ["measure", "value", "target"],
         title=f"{tenant.name}: {len(cases)} questions from {file}")
    chosen = {"failures": report.failures(), "all": report.outcomes, "none": []}[show]
    for outcome in chosen:
        out.print("", highlight=False)
        if outcome.correct:
            out.print(f"line {outcome.case.line}: {outcome.case.question}\n  " + outcome.answer.replace("\n", "\n  "),
                      highlight=False, markup=False)
        else:
            out.print(evaluation.failure_text(outcome.to_json()), highlight=False, markup=False)
