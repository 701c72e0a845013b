"""What one busy core costs a query on the other core: CPU time of a query embedding, alone and beside
a background process, in alternating rounds so the host's drift hits every setting alike.

    .venv/bin/python bench/cpu_sharing.py                  # ~2 min: 3 rounds x (none, spin, embed)
    .venv/bin/python bench/cpu_sharing.py --rounds 5 --queries 300

The foreground embeds SciFact claims one at a time with the local MiniLM embedder (one ONNX thread,
as the retrieval service does) and records each query's *CPU time* (``time.thread_time``), not its
wall time: a scheduler can delay a thread, but only shared hardware (caches, memory bandwidth, a
sibling hardware thread, the host's scheduling of the VM's vCPUs) makes the same computation cost
more CPU. Background settings, one process at nice 19 in its own session (as ``parley up`` starts a
worker, autogroup reniced too):

* ``none``: nothing else runs;
* ``spin``: a pure Python loop (keeps the other core busy, touches almost no memory);
* ``embed``: the document embedder running flat out on 256-token chunks (what a worker does).

With two cores the background process gets the other core, so any change here is not priority.
bench/isolation.py uses this to tell scheduling effects from hardware ones. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKGROUND = {
    "spin": "x = 0\nwhile True:\n    x += 1\n",
    "embed": (
        "from parley.embeddings.local import LocalEmbedder\n"
        "e = LocalEmbedder(threads=1, batch_size=8)\n"
        "texts = [' '.join(f'term{i}x{j}' for j in range(120)) for i in range(64)]\n"
        "while True:\n    e.embed_documents_sync(texts)\n"
    ),
}
PRELUDE = (
    "import os, sys\n"
    f"sys.path.insert(0, {str(ROOT)!r})\n"
    "os.nice(19)\n"
    "try:\n    open('/proc/self/autogroup', 'w').write('19')\nexcept OSError:\n    pass\n"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (none, spin, embed)")
    parser.add_argument("--queries", type=int, default=200, help="query embeddings per setting and round")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"), help="BEIR SciFact directory")
    args = parser.parse_args()

    queries_file = Path(args.data) / "queries.jsonl"
    if not queries_file.is_file():
        sys.exit(f"{queries_file} not found: this benchmark reads the SciFact claims from ../shared/data/scifact")
    from parley.embeddings.local import LocalEmbedder

    claims = [json.loads(line)["text"] for line in queries_file.open()][: args.queries]
    embedder = LocalEmbedder(threads=1)
    for claim in claims[:20]:
        embedder.embed_query_sync(claim)

    per_setting: dict[str, list[float]] = {"none": [], "spin": [], "embed": []}
    for rnd in range(args.rounds):
        for setting in per_setting:
            proc = None
            if setting != "none":
                proc = subprocess.Popen([sys.executable, "-c", PRELUDE + BACKGROUND[setting]], start_new_session=True)
                time.sleep(3.0 if setting == "embed" else 0.5)  # the model loads in ~1-2 s
            try:
                cpu = []
                for claim in claims:
                    t = time.thread_time()
                    embedder.embed_query_sync(claim)
                    cpu.append((time.thread_time() - t) * 1000)
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()
            per_setting[setting].append(statistics.median(cpu))
            print(f"round {rnd}: background {setting:5s} query embedding CPU ms median {statistics.median(cpu):.2f} "
                  f"p95 {percentile(cpu, 0.95):.2f}", file=sys.stderr, flush=True)

    base = per_setting["none"]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "rounds": args.rounds, "queries": len(claims),
        "median_cpu_ms": {k: [round(v, 2) for v in vs] for k, vs in per_setting.items()},
        "ratio_to_none": {k: [round(v / b, 3) for v, b in zip(vs, base)] for k, vs in per_setting.items() if k != "none"},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
