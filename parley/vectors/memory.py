"""One tenant's search structures in the reader process: HNSW for vectors, tantivy for BM25.

- Vectors: an hnswlib graph (cosine, M=16, ef_construction=100, ef=64, one thread). Every applied
  version of an entry gets a fresh integer label; the id <-> label maps live here. Deleted and
  replaced labels are ``mark_deleted`` and their slots reused (``allow_replace_deleted``).
- Keywords: a tantivy index (stemmed, stop-worded English analyzer over title and text) that
  stores only the id.
- Payloads (what a hit returns): one compact JSON ``bytes`` per label, in memory (~1.2 KB per
  150-word chunk: ~125 MB at 100k). Measured at 100k: looking the payloads of ten vector hits up
  in tantivy by id cost 0.5 ms p50 / 4.7 ms p90, more than the HNSW search itself (0.4 ms);
  from memory it is a list index and a ``json.loads``.

Concurrency. hnswlib documents ``add_items`` and ``resize_index`` as unsafe alongside
``knn_query``; a reader-preferring read/write lock lets searches run in parallel and makes each
mutation exclusive. Only the index thread mutates, in slices of ``ADD_SLICE`` inserts, so a search
waits for at most one slice. An apply is atomic for searches: new labels are inserted hidden
(a label filter excludes labels >= ``_visible_next``), tantivy commits without being reloaded,
and one short exclusive section then marks the old labels deleted, publishes the new ones and
swaps in the new tantivy searcher. Searches read the label maps and the searcher under the read
lock, so a replaced document is never seen both ways or neither way.

Snapshots. ``save`` writes the graph, the label -> id table and the payloads (one blob plus
offsets) under names that carry the seq,
then atomically renames a manifest naming them; tantivy's directory is durable by itself at every
commit and is always at or ahead of the manifest's seq, which is harmless because re-applying a
change (delete by id, add) is idempotent. ``load`` trusts a snapshot only for the same tenant and
generation; the caller replays the change feed from the snapshot's seq and cross-checks counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import tantivy
from tantivy import Filter, TextAnalyzerBuilder, Tokenizer

from parley.errors import InvalidInput
from parley.vectors.base import Hit
from parley.vectors.store import Change

HNSW_M = 16
EF_CONSTRUCTION = 100  # measured: 2.2x faster inserts than 200 for the same recall@10 on 384-d data
EF_SEARCH = 64
ADD_SLICE = 8  # inserts per exclusive hold: ~5-10 ms at 100k entries, the longest a search can wait
WRITER_HEAP = 32_000_000  # tantivy needs >= 15 MB per indexing thread; the writer lives for one apply
SNAPSHOT_FORMAT = 2
# the residency estimate's per-item costs (bytes), calibrated against RSS by bench/many_tenants.py
HNSW_ELEMENT_OVERHEAD = 48  # label lookup map node, upper-level link list pointer
PY_LABEL_OVERHEAD = 8 + 85 + 8 + 33  # _ids slot + 36-char str, _payloads slot + bytes header
PY_ENTRY_OVERHEAD = 100  # _label_of: dict slot share, key ref, int object
TENANT_FIXED_BYTES = 256 * 1024  # the objects, the tantivy Index/searcher and its caches
ESTIMATE_CALIBRATION = 1.6  # RSS growth / the sum above, measured in the service (bench/many_tenants.py: 1.35 for the index alone, ~1.2 more for allocator slack)
_ANALYZER = "parley_en"
_SEARCH_FIELDS = ["title", "text"]


class RWLock:
    """Many readers or one writer, readers first: a search never waits for a writer that is only
    waiting, just for one that holds the lock (one slice). Under a full CPU the writer (the
    low-priority index thread) waits instead, which is the order of importance."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", tokenizer_name=_ANALYZER)
    builder.add_text_field("text", tokenizer_name=_ANALYZER)
    return builder.build()


def _analyzer() -> tantivy.TextAnalyzer:
    return (
        TextAnalyzerBuilder(Tokenizer.simple())
        .filter(Filter.remove_long(40))
        .filter(Filter.lowercase())
        .filter(Filter.ascii_fold())
        .filter(Filter.stopword("english"))
        .filter(Filter.stemmer("english"))
        .build()
    )


class TenantIndex:
    """Use :meth:`fresh` or :meth:`load`; mutate only from one thread (the reader's index thread)."""

    def __init__(self, tenant_id: str, generation: str | None, directory: Path | None, origin: str) -> None:
        self.tenant_id = tenant_id
        self.generation = generation
        self.directory = directory
        self.origin = origin  # "database" (built from the change feed) or "snapshot"
        self.seq = 0  # every change with seq <= this is applied
        self.dim: int | None = None
        self.changes_since_snapshot = 0
        self.capacity_hint = 0
        self._rw = RWLock()
        self._hnsw: hnswlib.Index | None = None
        self._ids: list[str] = []  # label -> id, "" for dead labels; only ever grows
        self._payloads: list[bytes] = []  # label -> JSON of the hit's fields, b"" for dead labels
        self._label_of: dict[str, int] = {}
        self._visible_next = 0
        self.closed = False
        self._schema = _schema()
        if directory is not None:
            (directory / "bm25").mkdir(parents=True, exist_ok=True)
            self._bm25 = tantivy.Index(self._schema, path=str(directory / "bm25"), reuse=True)
        else:
            self._bm25 = tantivy.Index(self._schema)
        self._bm25.register_tokenizer(_ANALYZER, _analyzer())
        self._bm25.config_reader(reload_policy="Manual")
        self._bm25.reload()
        self._searcher = self._bm25.searcher()

    @classmethod
    def fresh(cls, tenant_id: str, generation: str | None, directory: Path | None, capacity_hint: int = 0) -> TenantIndex:
        if directory is not None and directory.exists():
            shutil.rmtree(directory)
        index = cls(tenant_id, generation, directory, origin="database")
        index.capacity_hint = capacity_hint
        return index

    @classmethod
    def load(cls, tenant_id: str, generation: str, directory: Path) -> TenantIndex | None:
        """The snapshot in ``directory`` if it belongs to this tenant and generation, else None."""
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        if (manifest.get("format"), manifest.get("tenant_id"), manifest.get("generation")) != (
            SNAPSHOT_FORMAT, tenant_id, generation,
        ):
            return None
        index = cls(tenant_id, generation, directory, origin="snapshot")
        ids = np.load(directory / manifest["ids"], allow_pickle=False).astype(str).tolist()
        offsets = np.load(directory / manifest["offsets"], allow_pickle=False).tolist()
        blob = (directory / manifest["payloads"]).read_bytes()
        if len(offsets) != len(ids) + 1 or offsets[-1] != len(blob):
            raise ValueError(f"snapshot of tenant {tenant_id} is inconsistent")
        if manifest["hnsw"]:
            graph = hnswlib.Index(space="cosine", dim=manifest["dim"])
            graph.load_index(str(directory / manifest["hnsw"]), allow_replace_deleted=True)
            graph.set_ef(EF_SEARCH)
            graph.set_num_threads(1)
            index._hnsw = graph
        index.dim = manifest["dim"]
        index._ids = ids
        index._payloads = [blob[start:end] for start, end in zip(offsets, offsets[1:])]
        index._label_of = {id_: label for label, id_ in enumerate(ids) if id_}
        index._visible_next = len(ids)
        index.seq = int(manifest["seq"])
        return index

    # --- facts -----------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self._label_of)

    @property
    def bm25_count(self) -> int:
        return self._searcher.num_docs

    def stats(self) -> dict[str, Any]:
        return {
            "generation": self.generation, "seq": self.seq, "count": self.count, "bm25_count": self.bm25_count,
            "origin": self.origin, "dimension": self.dim, "labels": len(self._ids),
            "changes_since_snapshot": self.changes_since_snapshot,
            "graph_bytes": self._hnsw.index_file_size() if self._hnsw is not None else 0,
            "payload_bytes": sum(map(len, self._payloads)),
        }

    def estimated_bytes(self) -> int:
        """What holding this tenant costs the process, estimated from sizes known here (the reader's
        residency budget, `parley.vectors.residency`): per graph slot hnswlib's level-0 record
        (vector, 2*M links, count, label) and its visited-list entry; per label the Python payload
        bytes, id string and list slots; per live entry the id -> label dict; the tantivy index's
        files (mmapped: what its searches can make resident) or, in memory, about its text.
        ``bench/many_tenants.py`` compares the sum with the process's RSS."""
        total = 0
        if self._hnsw is not None and self.dim:
            slots = self._hnsw.max_elements
            total += slots * (self.dim * 4 + 2 * HNSW_M * 4 + 4 + 8 + 2) + self._hnsw.element_count * HNSW_ELEMENT_OVERHEAD
        payload = 0
        for blob in self._payloads:
            payload += len(blob)
        labels = len(self._ids)
        total += payload + labels * PY_LABEL_OVERHEAD + len(self._label_of) * PY_ENTRY_OVERHEAD
        if self.directory is not None:
            with contextlib.suppress(OSError):
                with os.scandir(self.directory / "bm25") as entries:
                    total += sum(e.stat().st_size for e in entries if e.is_file(follow_symlinks=False))
        else:
            total += payload // 2
        return int((total + TENANT_FIXED_BYTES) * ESTIMATE_CALIBRATION)

    def close(self) -> None:
        """Release everything this tenant holds (a reader evicting it; index thread). Waits for
        searches in progress (none should be: the reader only releases unpinned tenants); the
        object answers nothing afterwards."""
        with self._rw.write():
            self._hnsw = None
            self._ids, self._payloads, self._label_of = [], [], {}
            self._visible_next = 0
            self._searcher = None  # type: ignore[assignment]
            self._bm25 = None  # type: ignore[assignment]
        self.closed = True

    # --- mutation (index thread only) ------------------------------------------------------

    def apply(self, changes: Sequence[Change], end_seq: int) -> None:
        """Apply one round of the change feed (whole transactions) and publish it atomically."""
        upserts = [c for c in changes if not c.deleted]
        labels = np.arange(len(self._ids), len(self._ids) + len(upserts), dtype=np.uint64)
        if upserts:
            vectors = np.stack([c.vector for c in upserts]).astype(np.float32, copy=False)
            self._prepare_graph(vectors.shape[1], len(upserts))
            self._ids.extend([""] * len(upserts))  # labels exist, hidden until the flip
            self._payloads.extend(_payload(c) for c in upserts)
            assert self._hnsw is not None
            for start in range(0, len(upserts), ADD_SLICE):
                with self._rw.write():
                    self._hnsw.add_items(
                        vectors[start : start + ADD_SLICE], labels[start : start + ADD_SLICE],
                        num_threads=1, replace_deleted=True,
                    )
        held = self._hold_files()
        try:
            self._apply_bm25_and_flip(changes, upserts, labels, end_seq)
        finally:
            for fd in held:  # the last reference to merged-away segment files: freed here, GIL released
                os.close(fd)
        self.changes_since_snapshot += len(changes)

    def _hold_files(self) -> list[int]:
        """Open every file of the on-disk BM25 index for the length of one apply.

        A commit can merge segments and delete their files; the searcher we then drop is their last
        user, and freeing a deleted file's blocks (ext4 journal, behind the workers' fsyncs) used to
        happen inside that drop - with the GIL and the write lock held, 30-135 ms every few applies
        (bench/isolation.py), stalling every search and the event loop. Holding a descriptor moves
        that cost to ``os.close``, which releases the GIL, in this (index) thread."""
        if self.directory is None:
            return []
        held = []
        with os.scandir(self.directory / "bm25") as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    try:
                        held.append(os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC))
                    except OSError:  # deleted meanwhile: nothing to hold
                        pass
        return held

    def _apply_bm25_and_flip(self, changes: Sequence[Change], upserts: list[Change], labels: np.ndarray, end_seq: int) -> None:
        writer = self._bm25.writer(heap_size=WRITER_HEAP, num_threads=1)
        try:
            for change in changes:
                writer.delete_documents_by_term("id", change.id)
                if not change.deleted:
                    writer.add_document(self._document(change))
            writer.commit()
        finally:
            writer.wait_merging_threads()
        self._bm25.reload()
        searcher = self._bm25.searcher()
        with self._rw.write():  # the flip: everything above becomes visible at once
            for change in changes:
                old = self._label_of.pop(change.id, None)
                if old is not None:
                    self._hnsw.mark_deleted(old)  # type: ignore[union-attr]
                    self._ids[old] = ""
                    self._payloads[old] = b""
            for change, label in zip(upserts, labels.tolist()):
                self._label_of[change.id] = label
                self._ids[label] = change.id
            self._visible_next = len(self._ids)
            self._searcher, searcher = searcher, self._searcher
            self.seq = end_seq
        del searcher  # the old one, dropped outside the write lock

    def _prepare_graph(self, dim: int, extra: int) -> None:
        if self._hnsw is None:
            graph = hnswlib.Index(space="cosine", dim=dim)
            graph.init_index(
                max_elements=max(1024, extra, self.capacity_hint), ef_construction=EF_CONSTRUCTION, M=HNSW_M,
                allow_replace_deleted=True,
            )
            graph.set_ef(EF_SEARCH)
            graph.set_num_threads(1)
            with self._rw.write():
                self._hnsw, self.dim = graph, dim
            return
        if dim != self.dim:
            raise RuntimeError(f"tenant {self.tenant_id}: {dim}-d change in a {self.dim}-d index")
        needed = self._hnsw.element_count + extra  # counts deleted slots too: over-reserves, never under
        if needed > self._hnsw.max_elements:
            with self._rw.write():
                self._hnsw.resize_index(max(needed, 2 * self._hnsw.max_elements))

    @staticmethod
    def _document(change: Change) -> tantivy.Document:
        doc = tantivy.Document()
        doc.add_text("id", change.id)
        doc.add_text("title", change.title)
        doc.add_text("text", change.text)
        return doc

    def save(self) -> bool:
        """Write a snapshot (index thread only; searches go on). False when there is no directory."""
        if self.directory is None or self.generation is None:
            return False
        tag = f"{self.seq}-{os.urandom(3).hex()}"
        manifest = {
            "format": SNAPSHOT_FORMAT, "tenant_id": self.tenant_id, "generation": self.generation,
            "seq": self.seq, "dim": self.dim, "count": self.count, "hnsw": None, "ids": f"ids-{tag}.npy",
            "offsets": f"offsets-{tag}.npy", "payloads": f"payloads-{tag}.bin",
        }
        if self._hnsw is not None:
            manifest["hnsw"] = f"hnsw-{tag}.bin"
            self._hnsw.save_index(str(self.directory / manifest["hnsw"]))
        np.save(self.directory / manifest["ids"], np.array(self._ids, dtype="S36"), allow_pickle=False)
        sizes = np.fromiter((len(p) for p in self._payloads), dtype=np.int64, count=len(self._payloads))
        np.save(self.directory / manifest["offsets"], np.concatenate([[0], np.cumsum(sizes)]), allow_pickle=False)
        with open(self.directory / manifest["payloads"], "wb") as fh:
            fh.writelines(self._payloads)
        tmp = self.directory / "manifest.json.tmp"
        with open(tmp, "w") as fh:
            json.dump(manifest, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / "manifest.json")
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for path in self.directory.iterdir():
            current = (manifest["hnsw"], manifest["ids"], manifest["offsets"], manifest["payloads"])
            if path.name.startswith(("hnsw-", "ids-", "offsets-", "payloads-")) and path.name not in current:
                path.unlink(missing_ok=True)
        self.changes_since_snapshot = 0
        return True

    # --- searches (any thread) -------------------------------------------------------------

    def vector_search(self, query: np.ndarray, limit: int) -> list[Hit]:
        with self._rw.read():
            if self._hnsw is None or not self._label_of or limit <= 0:
                return []
            if query.shape[0] != self.dim:
                raise InvalidInput(f"query vector has {query.shape[0]} dimensions, the tenant's index {self.dim}")
            visible_next = self._visible_next
            hidden: Callable[[int], bool] | None = None
            if len(self._ids) > visible_next:  # an apply is in flight: skip its not-yet-published labels
                hidden = lambda label: label < visible_next  # noqa: E731
            labels, distances = self._knn(query, min(limit, len(self._label_of)), hidden)
            found = [(self._payloads[label], d) for label, d in zip(labels, distances)]
        return [_hit(payload, 1.0 - distance) for payload, distance in found if payload]

    def _knn(self, query: np.ndarray, k: int, allowed: Callable[[int], bool] | None) -> tuple[list[int], list[float]]:
        assert self._hnsw is not None
        while True:
            try:
                labels, distances = self._hnsw.knn_query(query, k=k, num_threads=1, filter=allowed)
                return labels[0].tolist(), distances[0].tolist()
            except RuntimeError:  # fewer than k reachable (heavy deletions, hidden labels): ask for fewer
                if k == 1:
                    return [], []
                k //= 2

    def keyword_search(self, terms: list[str], limit: int, title_weight: float = 1.0) -> list[Hit]:
        """BM25 over title and text; ``title_weight`` scales the title field's part of the score."""
        if not terms or limit <= 0:
            return []
        boosts = {"title": title_weight} if title_weight != 1.0 else None
        query, _errors = self._bm25.parse_query_lenient(" ".join(terms), _SEARCH_FIELDS, field_boosts=boosts)
        with self._rw.read():  # the searcher and the id -> payload map of one published state
            searcher = self._searcher
            if searcher.num_docs == 0:
                return []
            found = []
            for score, address in searcher.search(query, limit, count=False).hits:
                label = self._label_of.get(searcher.doc(address).get_first("id"))
                if label is not None:
                    found.append((self._payloads[label], score))
        return [_hit(payload, score) for payload, score in found]


def _payload(change: Change) -> bytes:
    fields = [change.id, change.document_id, change.kind, change.title, change.text, change.heading_path, change.metadata]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def _hit(payload: bytes, score: float) -> Hit:
    id_, document_id, kind, title, text, heading_path, metadata = json.loads(payload)
    return Hit(id_, document_id, kind, title, text, heading_path, metadata, float(score))
