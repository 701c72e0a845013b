"""Answer quality through the product: our own questions over ../shared/data/docs and the Shopify
demo catalogs, asked the way a customer would, judged by `retrieval.evaluation`.

1. A fresh data directory (SQLite, blobs, embedded index), migrated; one tenant.
2. Every document under ../shared/data/docs/*/ (not the folder's provenance README) is uploaded as the CLI does (blob + `submit_upload`) and
   indexed by the document worker's own handler (`ingestion.documents.service.index_document`:
   sandboxed extraction, chunking, embedding, vector index, chunk rows). Files the worker refuses
   (encrypted, damaged, empty) fail as they would for a tenant and are listed.
3. The three shopifypartners catalogs (60 products, variants as extra rows) become Admin GraphQL
   product nodes and are indexed by the catalog worker's handler (`ingestion.catalog.service.
   index_products`).
4. The retrieval service is built from the same settings as `parley retrieval` and answers every
   question of bench/answer_quality.jsonl in process (`InProcessRetrievalClient`).

Printed: the table `parley eval` prints, every failed case with its answer, and (``--json``) the
whole report. The questions were written before the answerer was changed and are not tuned to it.

    .venv/bin/python bench/answer_quality.py                # ~1-2 min (embeds ~90 chunks and products)
    .venv/bin/python bench/answer_quality.py --json > /tmp/answer_quality.json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli import migrations  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from parley.settings import Settings  # noqa: E402
from retrieval import evaluation  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
QUESTIONS = ROOT / "bench" / "answer_quality.jsonl"
SHOP = "partners-demo.myshopify.com"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def upload_documents(settings: Settings, sessions: Any, embedder: Any, index: Any, tenant_id: str, folder: Path) -> list[str]:
    """Upload and index every file under ``folder`` with the document worker's handler; returns the failures."""
    from ingestion.documents import sandbox
    from ingestion.documents.service import IndexingDeps, index_document
    from knowledge.service import submit_upload
    from parley.blobs import BlobStore
    from parley.bus import Permanent, Retryable

    blobs = BlobStore(settings.effective_blob_dir)
    deps = IndexingDeps(sessions=sessions, blobs=blobs, embedder=embedder, index=index)
    failed = []
    try:
        # the documents, not the folder's own provenance notes (README.md, MANIFEST, the probe)
        for path in sorted(p for p in folder.glob("*/*") if p.is_file()):
            blob = await blobs.put_file(tenant_id, path, max_bytes=settings.max_upload_bytes)
            async with unit_of_work(sessions, tenant_id=tenant_id) as session:
                submitted = await submit_upload(session, tenant_id=tenant_id, source="cli", filename=path.name,
                                                declared_mime=None, blob=blob)
                document_id = submitted.document.id
            try:
                async with unit_of_work(sessions, tenant_id=tenant_id) as session:
                    await index_document(deps, session, tenant_id=tenant_id, document_id=document_id)
            except (Permanent, Retryable) as exc:
                failed.append(f"{path.name}: {exc}")
    finally:
        await sandbox.aclose()
    return failed


async def index_catalog(settings: Settings, sessions: Any, embedder: Any, index: Any, tenant_id: str) -> int:
    """The shopifypartners catalogs through the catalog worker's handler."""
    import aiohttp

    from ingestion.catalog.service import CatalogDeps, index_products
    from integrations.shopify.config import ShopifyConfig
    from integrations.shopify.products import from_graphql
    from parley.crypto import load_secret_box
    from tests.integrations.catalog_data import csv_catalog

    nodes = csv_catalog(60, folder=SHARED / "catalog")
    products = [from_graphql(n, shop=SHOP, currency="USD") for n in nodes]
    async with aiohttp.ClientSession() as http:
        deps = CatalogDeps(sessions=sessions, embedder=embedder, index=index, config=ShopifyConfig(),
                           box=load_secret_box(settings), http=http)
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            outcome = await index_products(deps, session, tenant_id=tenant_id, shop=SHOP, products=products)
            from tenants.repository import TenantDirectory

            await TenantDirectory(session).bump_index_version(tenant_id)
    return len(outcome.indexed)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.ERROR)
    from aiohttp import web

    from parley import runtime
    from parley.vectors import create_vector_index
    from retrieval.app import create_app
    from retrieval.client import InProcessRetrievalClient
    from retrieval.repository import document_names
    from retrieval.routes import SERVICE
    from retrieval.schemas import QueryRequest
    from tenants.service import create_tenant

    if not (SHARED / "docs").is_dir():
        raise SystemExit(f"the shared test data is missing (looked for {SHARED / 'docs'})")
    cases = evaluation.read_cases(args.questions)
    work = Path(args.data_dir or tempfile.mkdtemp(prefix="parley-bench-answers-"))
    settings = Settings(data_dir=work, log_json=False, log_level="ERROR")
    engine = create_engine(settings, "bench")
    await migrations.upgrade(engine)
    sessions = create_sessionmaker(engine)
    async with unit_of_work(sessions, admin=True) as session:
        tenant_id = (await create_tenant(session, name="answers-bench", display_name="Demo Store")).id

    t0 = time.perf_counter()
    embedder = await asyncio.to_thread(runtime.embedder, settings)
    writer = create_vector_index(settings, role="writer", sessions=sessions)
    failed = await upload_documents(settings, sessions, embedder, writer, tenant_id, SHARED / "docs")
    products = await index_catalog(settings, sessions, embedder, writer, tenant_id)
    await writer.aclose()
    await embedder.aclose()
    say(f"indexed the documents ({len(failed)} refused by the worker) and {products} products in {time.perf_counter() - t0:.1f} s")
    for line in failed:
        say(f"  refused: {line}")

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        client = InProcessRetrievalClient(app[SERVICE])

        async def ask(question: str) -> Any:
            return await client.query(QueryRequest(tenant_id=tenant_id, conversation_id="bench", message=question))

        t0 = time.perf_counter()
        report = await evaluation.evaluate(cases, ask, lambda ids: document_names(sessions, tenant_id, ids))
        asked_s = time.perf_counter() - t0
    finally:
        await runner.cleanup()
        await engine.dispose()
    out = report.to_json()
    out["run"] = {"questions": str(args.questions), "ask_seconds": round(asked_s, 2), "refused_uploads": failed,
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    return out


def print_report(result: dict[str, Any]) -> None:
    for row in evaluation.summary_rows(result["figures"]):
        print(f"{row['measure']:36s} {row['value']:>16s}   {row['target']}")
    for case in result["cases"]:
        if not case["correct"]:
            print("\n" + evaluation.failure_text(case))
    print(f"\n{result['run']['machine']}; {len(result['cases'])} questions asked in {result['run']['ask_seconds']} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", default=str(QUESTIONS), help="the JSONL question set")
    parser.add_argument("--data-dir", help="where the SQLite file, blobs and index go (default: a new temp dir)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parsed = parser.parse_args()
    result = asyncio.run(main(parsed))
    if parsed.json:
        import json

        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print_report(result)
