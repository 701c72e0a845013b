"""Answer latency while indexing runs flat out, on the real processes: does indexing share the answer path's CPU?

    .venv/bin/python bench/isolation.py --quick        # ~3 min: 25 s phases, 150 documents, both modes
    .venv/bin/python bench/isolation.py                # full, ~8 min: 60 s phases, 400 documents, both modes
    .venv/bin/python bench/isolation.py --modes parley --phase-seconds 30 --rate 10
    .venv/bin/python bench/isolation.py --modes parley --stop-workers-while-asking   # diagnostic, see RESULTS.md

Set-up (embedded defaults: SQLite, the embedded vector index, the local MiniLM embedder, the
offline answerer; a temp data dir, a unique PARLEY_AMQP_PREFIX, a free port): one tenant holds a
knowledge base of the SciFact abstracts (~8k chunks with their real embeddings, cached under
var/bench-cache and shared with bench/query_latency.py and bench/retrieval_quality.py). A burst
of ``--docs`` documents (the real files of ../shared/data/docs - PDF, DOCX, HTML, Markdown, a few
of them encrypted or corrupt on purpose - plus generated ~``--doc-kb`` KB Markdown / HTML / text /
PDF documents made of SciFact sentences; a few MB in all) is uploaded for the same tenant through
``submit_upload`` (blob stored, document row and outbox message committed: what the gateway does
before it answers "received"), so the burst sits in the outbox when the phases start.

Two modes, each on a fresh copy of that state:

* ``parley``: the processes ``parley up`` runs, built from ``cli.supervisor.platform_processes``
  (command, niceness, math-library thread variables): ``parley retrieval`` at nice 0 and
  ``--workers`` x ``parley worker documents`` at the configured worker niceness (19).
* ``coupled`` (the "before" picture): one process serves the same retrieval app and also
  consumes the documents queue with the same ``index_document`` code, in its event loop, with its
  embedder and its vector index (which then writes too), all at nice 0.

Phase A: an open-loop stream of ``--rate`` questions per second for ``--phase-seconds``, each a
distinct SciFact claim phrasing (answer-cache and embedding-cache misses), asked through
``retrieval.client.HttpRetrievalClient``; latency is the client's wall time per request. No
indexing runs (no worker is started yet). Phase B: the same stream (new questions) while indexing
runs flat out: in ``parley`` mode the workers start (their outbox relays publish the burst), in
``coupled`` mode the in-process consumer starts. Reported per phase: p50 / p95 / p99 / max,
errors, cache hits (should be 0), the CPU seconds each process used, the load average; for B the
chunks indexed per second and the slowest 10 s window (steady progress, not a stall). Target:
parley's p99 in B within 1.2x of A. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import delete_topology, free_port, stop_process, wait_until_serving  # noqa: E402

DOCS_DIR = ROOT.parent / "shared" / "data" / "docs"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------------


def base_env(**parley: str) -> dict[str, str]:
    """This environment without any PARLEY_* or OpenAI variable, plus the given PARLEY_* ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "OPENAI_"))}
    env.update({f"PARLEY_{k.upper()}": str(v) for k, v in parley.items()})
    return env


def spawn(command: list[str], env: dict[str, str], log: Path, *, nice: int = 0) -> subprocess.Popen[bytes]:
    """Start a child the way ``parley up`` does (cli.supervisor._Child.start): own session, niceness set before exec."""
    out = open(log, "ab")

    def lower_priority() -> None:
        if nice:
            os.nice(nice)

    try:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out, preexec_fn=lower_priority,
                                start_new_session=True)
    finally:
        out.close()


def platform_spec(settings: Any, name: str) -> Any:
    from cli.supervisor import platform_processes

    return next(s for s in platform_processes(settings) if s.name == name)


def spawn_spec(spec: Any, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A ``cli.supervisor.ProcessSpec`` started as ``parley up`` starts it: its command, niceness and env
    (a worker's /metrics endpoint on a free port instead of the fixed one, so several copies can run)."""
    child_env = {**env, **spec.env}
    if "PARLEY_WORKER_METRICS_PORT" in spec.env:
        child_env["PARLEY_WORKER_METRICS_PORT"] = "0"
    return spawn([sys.executable, "-m", "cli", *spec.command], child_env, log, nice=spec.nice)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree(pid: int) -> list[int]:
    """The pid and its living descendants (the parser fork server and its children)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of a process tree so far: own and reaped children's, user + system (Linux /proc)."""
    total = 0.0
    for p in tree(pid):
        fields = _stat(p)
        if fields:
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of one process (not its children), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def wait_http_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> float:
    """Seconds until ``url`` answers 200, in a session of its own (`bench._common.wait_until_serving`)."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        return await wait_until_serving(http, url, proc, log, timeout=timeout, interval=0.1)


async def wait_log(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.perf_counter() - t0 > timeout:
            raise SystemExit(f"no {text!r} in {log}")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# --- data -----------------------------------------------------------------------------------------


def questions(claims: list[str], n: int, seed: int) -> list[str]:
    """``n`` distinct questions made of SciFact claims (each one is an answer-cache and embedding-cache miss)."""
    forms = ["{c}", "Is it true that {l}?", "What is known about the claim that {l}?", "Evidence that {l}?",
             "Does the literature support that {l}?", "Explain whether {l}.", "{c} Is that right?",
             "Tell me if {l}.", "Check this claim: {c}", "Is there a study showing that {l}?"]
    rng = random.Random(seed)
    out, seen = [], set()
    for form in forms:
        batch = claims[:]
        rng.shuffle(batch)
        for c in batch:
            c = c.strip().rstrip(".")
            q = form.format(c=c + ".", l=c[:1].lower() + c[1:])
            if q not in seen:
                seen.add(q)
                out.append(q)
            if len(out) >= n:
                return out
    raise SystemExit(f"only {len(out)} distinct questions; lower --rate or --phase-seconds")


def burst(n: int, kb: int, seed: int, abstracts: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """The real sample files, then generated documents of SciFact sentences (md, html, txt, pdf) up to ``n``."""
    from retrieval.text import split_sentences
    from tests.ingestion.samples import build_pdf

    files: list[tuple[str, bytes]] = []
    if DOCS_DIR.is_dir():
        for path in sorted(DOCS_DIR.rglob("*")):
            if path.is_file() and path.suffix in (".pdf", ".docx", ".html", ".md") and len(files) < n:
                files.append((path.name, path.read_bytes()))
    rng = random.Random(seed)
    sentences = [s for a in abstracts for s in split_sentences(a["text"])]
    i = 0
    while len(files) < n:
        title = f"Research notes {i}: {rng.choice(abstracts)['title'][:60]}"
        sections, size = [], 0
        while size < kb * 1024:
            heading = rng.choice(abstracts)["title"][:70]
            paras = [" ".join(rng.choice(sentences) for _ in range(rng.randint(3, 6))) for _ in range(rng.randint(2, 4))]
            sections.append((heading, paras))
            size += len(heading) + sum(map(len, paras))
        kind = i % 4
        if kind == 0:
            body = f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n" + "\n\n".join(p) for h, p in sections)
            files.append((f"notes-{i}.md", body.encode()))
        elif kind == 1:
            body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>" + "".join(
                f"<h2>{h}</h2>" + "".join(f"<p>{x}</p>" for x in p) for h, p in sections) + "</body></html>"
            files.append((f"notes-{i}.html", body.encode()))
        elif kind == 2:
            body = title + "\n\n" + "\n\n".join(h + "\n\n" + "\n\n".join(p) for h, p in sections)
            files.append((f"notes-{i}.txt", body.encode()))
        else:
            text = " ".join([title] + [h + ". " + " ".join(p) for h, p in sections])
            text = text.encode("cp1252", "replace").decode("cp1252")  # the sample PDF writer's font encoding
            lines = [text[j : j + 90] for j in range(0, len(text), 90)]
            files.append((f"notes-{i}.pdf", build_pdf([lines[j : j + 48] for j in range(0, len(lines), 48)])))
        i += 1
    return files


async def build_template(args: argparse.Namespace, work: Path) -> tuple[str, int]:
    """The knowledge base (writer index + reader snapshot) and the staged burst, in ``work``."""
    from bench.query_latency import build
    from bench.retrieval_quality import chunk_corpus, embed_cached, read_jsonl
    from parley.blobs import BlobStore
    from parley.db import create_engine, create_sessionmaker, unit_of_work
    from knowledge.service import create_job, submit_upload
    from parley.settings import Settings

    corpus = read_jsonl(Path(args.data) / "corpus.jsonl")
    base = chunk_corpus(corpus)
    vectors = embed_cached([c["embed"] for c in base], Path(args.cache_dir), 2, None)
    n = min(args.kb_chunks, len(base))
    tenant_id, _url = await build(argparse.Namespace(database_url=None), base[:n], vectors[:n], work)
    files = burst(args.docs, args.doc_kb, args.seed, corpus)
    say(f"burst: {len(files)} documents, {sum(len(d) for _, d in files) / 1e6:.1f} MB "
        f"({sum(1 for f, _ in files if f.endswith('.pdf'))} PDF)")
    settings = Settings(data_dir=work)
    engine = create_engine(settings, "bench")
    sessions = create_sessionmaker(engine)
    blobs = BlobStore(settings.effective_blob_dir)
    async with unit_of_work(sessions, tenant_id=tenant_id) as s:
        job_id = (await create_job(s, tenant_id=tenant_id, kind="documents", description="isolation burst", total=len(files))).id
        for name, data in files:
            blob = await blobs.put_bytes(tenant_id, data, max_bytes=settings.max_upload_bytes)
            await submit_upload(s, tenant_id=tenant_id, source="bench", filename=name, declared_mime=None, blob=blob, job_id=job_id)
    await engine.dispose()  # no relay here: the burst stays in the outbox until a worker's relay publishes it
    return tenant_id, n


# --- the coupled process (the "before" picture) ----------------------------------------------------


async def serve_coupled(consumers: int) -> None:
    """The retrieval app plus document consumers in one process and one event loop (nice 0), sharing its
    embedder and vector index. The consumers (and an outbox relay) start on SIGUSR1; SIGTERM stops all."""
    from aiohttp import web

    from ingestion.documents.consumer import build_document_consumer
    from parley import runtime
    from parley.bus import OutboxRelay
    from parley.worker import WorkerContext
    from parley.db import create_engine, create_sessionmaker
    from parley.logging import configure_logging
    from parley.settings import Settings
    from parley.vectors import create_vector_index
    from retrieval.app import RetrievalDeps, build_embedder, create_app

    settings = Settings()
    configure_logging(process_name="coupled", level=settings.log_level, json_lines=settings.log_json)
    loop = asyncio.get_running_loop()
    stopping, indexing = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGUSR1, indexing.set)
    engine = create_engine(settings, "coupled")
    sessions = create_sessionmaker(engine)
    embedder = await asyncio.to_thread(build_embedder, settings)
    index = create_vector_index(settings, role="reader", sessions=sessions, index_nice=0)
    app = create_app(settings, deps=RetrievalDeps(sessions=sessions, embedder=embedder, index=index), freeze_heap=True)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.retrieval_host, settings.retrieval_port).start()
    broker = runtime.rabbit_broker(settings, "coupled")
    relay = None
    workers = None
    try:
        await asyncio.wait([asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(indexing.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if not stopping.is_set():
            await broker.start()
            relay = OutboxRelay(sessions, broker)
            await relay.start()
            workers = WorkerContext(settings=settings, sessions=sessions, broker=broker, embedder=embedder, index=index)
            group = [build_document_consumer(workers) for _ in range(consumers)]
            print("coupled consumers started", file=sys.stderr, flush=True)
            from parley.bus import run_consumer

            await run_consumer(group, stopping)
    finally:
        if relay is not None:
            await relay.stop()
        await broker.close()
        if workers is not None:
            await workers.aclose()  # the parser fork server
        await runner.cleanup()  # closes the service; the index and embedder are ours
        await index.aclose()
        await embedder.aclose()
        await engine.dispose()


# --- one mode -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cached: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    load: str = ""
    chunks: int = 0
    documents: int = 0
    windows: list[int] = field(default_factory=list)  # chunks indexed per progress window
    stages: dict[str, list[float]] = field(default_factory=dict)  # the service's own per-stage timings

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        out = {"n": len(lat), "errors": len(self.errors), "cached": self.cached, "p50_ms": round(pct(lat, .5), 2),
               "p95_ms": round(pct(lat, .95), 2), "p99_ms": round(pct(lat, .99), 2),
               "max_ms": round(max(lat), 2) if lat else None, "cpu_s": {k: round(v, 1) for k, v in self.cpu.items()},
               "load": self.load,
               "service_stage_p99_ms": {k: round(pct(v, .99), 1) for k, v in self.stages.items()}}
        if self.chunks or self.documents:
            out.update(chunks=self.chunks, documents=self.documents, chunks_per_s=round(self.chunks / self.seconds, 2),
                       slowest_window_chunks_per_s=round(min(self.windows) / WINDOW, 2) if self.windows else None)
        return out


WINDOW = 10.0  # seconds per progress window


class WorkerGate:
    """Diagnostic (``--stop-workers-while-asking``): SIGSTOP the workers' process groups while any
    question is in flight, SIGCONT when none is. Not a product mode: it shows how much of the tail
    is left when indexing never runs during an answer, i.e. what no process priority could remove."""

    def __init__(self) -> None:
        self.pgids: list[int] = []
        self.in_flight = 0

    def signal_all(self, sig: int) -> None:
        for pgid in self.pgids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight == 1:
            self.signal_all(signal.SIGSTOP)

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.signal_all(signal.SIGCONT)


async def stream(base_url: str, tenant_id: str, asks: list[str], rate: float, seconds: float, phase: Phase,
                 gate: WorkerGate | None = None, *, token: str | None = None) -> None:
    """Open loop: question i is sent at t0 + i/rate whatever happened to the earlier ones."""
    from retrieval.client import HttpRetrievalClient
    from retrieval.schemas import QueryRequest

    client = HttpRetrievalClient(base_url, timeout=30, token=token)
    n = int(rate * seconds)
    t0 = time.perf_counter()

    async def one(i: int, q: str) -> None:
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        t = time.perf_counter()
        if gate is not None:
            gate.enter()
        try:
            r = await client.query(QueryRequest(tenant_id=tenant_id, message=q))
        except Exception as exc:  # noqa: BLE001 - counted, reported
            phase.errors.append(f"{type(exc).__name__}: {exc}")
            return
        finally:
            if gate is not None:
                gate.leave()
        wall = (time.perf_counter() - t) * 1000
        phase.latencies.append(wall)
        phase.cached += bool(r.cached)
        phase.stages.setdefault("outside", []).append(wall - r.timings.get("total", 0.0))  # HTTP, queueing, event loop
        for stage, ms in r.timings.items():
            phase.stages.setdefault(stage, []).append(ms)

    try:
        await asyncio.gather(*(one(i, q) for i, q in enumerate(asks[:n])))
    finally:
        await client.aclose()
    phase.seconds = time.perf_counter() - t0


async def indexed(sessions: Any, tenant_id: str) -> tuple[int, int]:
    """(chunks, documents indexed) of the burst so far: the knowledge base has no chunk rows."""
    from sqlalchemy import func, select

    from parley.db import unit_of_work
    from knowledge.models import Chunk, Document, DocumentStatus

    async with unit_of_work(sessions, tenant_id=tenant_id) as s:
        chunks = (await s.execute(select(func.count()).select_from(Chunk).where(Chunk.tenant_id == tenant_id))).scalar_one()
        docs = (await s.execute(select(func.count()).select_from(Document).where(
            Document.tenant_id == tenant_id, Document.status == DocumentStatus.indexed))).scalar_one()
    return chunks, docs


async def run_mode(mode: str, args: argparse.Namespace, template: Path, tenant_id: str, asks: list[str]) -> dict[str, Any]:
    from parley.crypto import load_service_token
    from parley.db import create_engine, create_sessionmaker
    from parley.settings import Settings

    work = Path(tempfile.mkdtemp(prefix=f"parley-isolation-{mode}-"))
    shutil.copytree(template, work, dirs_exist_ok=True)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    port = free_port()
    settings = Settings(data_dir=work, amqp_prefix=prefix, retrieval_port=port)
    env = base_env(data_dir=work, amqp_prefix=prefix, retrieval_port=port, log_level=args.log_level)
    token = load_service_token(settings)  # <work>/service.token: the service reads the same file
    base_url = f"http://127.0.0.1:{port}"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    engine = create_engine(settings, "bench")
    sessions = create_sessionmaker(engine)
    per_phase = int(args.rate * args.phase_seconds)
    warm, first, second = asks[:40], asks[40 : 40 + per_phase], asks[40 + per_phase :]
    phases = {"A": Phase("A"), "B": Phase("B")}
    gate = WorkerGate()
    try:
        if mode == "parley":
            spec = platform_spec(settings, "retrieval")
            procs["retrieval"] = spawn_spec(spec, env, work / "retrieval.log")
        else:
            code = f"import asyncio; from bench.isolation import serve_coupled; asyncio.run(serve_coupled({args.workers}))"
            procs["coupled"] = spawn([sys.executable, "-c", code], {**env, "PYTHONPATH": str(ROOT)}, work / "coupled.log")
        server = next(iter(procs.values()))
        ready = await wait_http_ready(f"{base_url}/readyz", server, work / f"{mode}.log")
        say(f"[{mode}] service ready in {ready:.1f}s; warming up with {len(warm)} questions")
        await stream(base_url, tenant_id, warm, 20.0, len(warm) / 20.0, Phase("warm"), token=token)

        for name, asks_ in (("A", first), ("B", second)):
            phase = phases[name]
            if name == "B":
                if mode == "parley":
                    spec = platform_spec(settings, "documents-worker")
                    for w in range(args.workers):
                        procs[f"worker{w}"] = spawn_spec(spec, env, work / f"worker{w}.log")
                        gate.pgids.append(procs[f"worker{w}"].pid)  # each worker leads its own session
                else:
                    server.send_signal(signal.SIGUSR1)
            cpu0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
            done0 = await indexed(sessions, tenant_id)
            say(f"[{mode}] phase {name}: {args.rate:g} q/s for {args.phase_seconds:g}s; load {load()}")
            progress: list[tuple[int, int]] = [done0]

            async def sample() -> None:
                while True:
                    await asyncio.sleep(WINDOW)
                    progress.append(await indexed(sessions, tenant_id))

            sampler = asyncio.create_task(sample())
            try:
                await stream(base_url, tenant_id, asks_, args.rate, args.phase_seconds, phase,
                             gate if args.stop_workers_while_asking else None, token=token)
            finally:
                sampler.cancel()
            end = await indexed(sessions, tenant_id)
            phase.cpu = {k: cpu_seconds(p.pid) - cpu0.get(k, 0.0) for k, p in procs.items()}
            phase.load = load()
            phase.chunks, phase.documents = end[0] - done0[0], end[1] - done0[1]
            phase.windows = [b[0] - a[0] for a, b in zip(progress, progress[1:])]
            s = phase.summary()
            say(f"[{mode}] phase {name}: p50 {s['p50_ms']} p95 {s['p95_ms']} p99 {s['p99_ms']} max {s['max_ms']} ms, "
                f"{s['errors']} errors, {s['cached']} cached; cpu s {s['cpu_s']}; load {phase.load}; "
                f"service p99 by stage {s['service_stage_p99_ms']}"
                + (f"; indexed {phase.chunks} chunks / {phase.documents} docs = {s['chunks_per_s']} chunks/s, "
                   f"slowest {WINDOW:g}s window {s['slowest_window_chunks_per_s']} chunks/s" if name == "B" else ""))
        for p in procs.values():
            if p.poll() is not None:
                say(f"[{mode}] a process exited early ({p.returncode}); see {work}")
    finally:
        gate.signal_all(signal.SIGCONT)  # a stopped worker cannot act on the SIGTERM that stops it
        codes = {k: stop_process(p, timeout=40) for k, p in procs.items()}  # own sessions: the parser fork servers go too
        await engine.dispose()
        from parley import runtime

        await delete_topology(runtime.rabbit_broker(settings, "bench-cleanup"), start=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"[{mode}] kept {work}")
    a, b = phases["A"].summary(), phases["B"].summary()
    ratio = {q: round(b[f"{q}_ms"] / a[f"{q}_ms"], 2) for q in ("p50", "p95", "p99")}
    return {"A": a, "B": b, "ratio_B_over_A": ratio, "exit_codes": codes}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from bench.retrieval_quality import read_jsonl

    started = dt.datetime.now(dt.timezone.utc)
    say(f"load before: {load()} on {os.cpu_count()} CPUs")
    template = Path(tempfile.mkdtemp(prefix="parley-isolation-template-"))
    try:
        tenant_id, kb = await build_template(args, template)
        claims = [q["text"] for q in read_jsonl(Path(args.data) / "queries.jsonl")]
        out: dict[str, Any] = {
            "date": started.isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "kb_chunks": kb, "docs": args.docs, "rate_qps": args.rate, "phase_seconds": args.phase_seconds,
            "workers": args.workers, "stop_workers_while_asking": args.stop_workers_while_asking, "modes": {},
        }
        for i, mode in enumerate(args.modes):
            asks = questions(claims, 40 + 2 * int(args.rate * args.phase_seconds), args.seed + i)
            out["modes"][mode] = await run_mode(mode, args, template, tenant_id, asks)
    finally:
        shutil.rmtree(template, ignore_errors=True)

    print(f"\n{out['kb_chunks']} chunks in the tenant; {args.rate:g} distinct questions/s; {args.phase_seconds:g}s per phase; "
          f"burst of {args.docs} documents; {args.workers} worker(s)")
    print(f"{'mode':<8} {'phase':<5} {'n':>5} {'err':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'chunks/s':>9} {'slowest 10s':>11}  load")
    for mode, r in out["modes"].items():
        for name in ("A", "B"):
            s = r[name]
            rate = f"{s.get('chunks_per_s', 0):9.2f} {s.get('slowest_window_chunks_per_s') or 0:11.2f}" if name == "B" else " " * 21
            print(f"{mode:<8} {name:<5} {s['n']:>5} {s['errors']:>4} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} {s['p99_ms']:8.1f} "
                  f"{s['max_ms']:8.1f} {rate}  {s['load']}")
        rr = r["ratio_B_over_A"]
        print(f"{mode:<8} B/A   p50 {rr['p50']:.2f}x  p95 {rr['p95']:.2f}x  p99 {rr['p99']:.2f}x"
              + ("   (target p99 <= 1.2x)" if mode == "parley" else ""))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="25 s phases and 150 documents (~3 min)")
    parser.add_argument("--phase-seconds", type=float, default=None, help="length of each phase (default 60, quick 25)")
    parser.add_argument("--rate", type=float, default=20.0, help="questions per second, open loop")
    parser.add_argument("--docs", type=int, default=None, help="documents in the burst (default 400, quick 150)")
    parser.add_argument("--doc-kb", type=int, default=8, help="size of a generated document, KB of text")
    parser.add_argument("--workers", type=int, default=2,
                        help="document worker processes (parley mode) / consumers (coupled mode); 2 fill both cores")
    parser.add_argument("--kb-chunks", type=int, default=100_000, help="at most this many SciFact chunks in the tenant")
    parser.add_argument("--modes", nargs="+", choices=["parley", "coupled"], default=["parley", "coupled"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"), help="BEIR SciFact directory")
    parser.add_argument("--cache-dir", default=str(ROOT / "var" / "bench-cache"))
    parser.add_argument("--log-level", default="INFO", help="PARLEY_LOG_LEVEL of the processes (INFO: one line per query, as run)")
    parser.add_argument("--stop-workers-while-asking", action="store_true",
                        help="diagnostic: SIGSTOP the workers while a question is in flight (parley mode), to see "
                             "the tail that is left when indexing never runs during an answer")
    parser.add_argument("--keep", action="store_true", help="keep each mode's data directory (logs, database)")
    ns = parser.parse_args()
    ns.phase_seconds = ns.phase_seconds or (25.0 if ns.quick else 60.0)
    ns.docs = ns.docs or (150 if ns.quick else 400)
    asyncio.run(main(ns))
