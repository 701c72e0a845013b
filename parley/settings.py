"""Settings: one class, environment prefix ``PARLEY_``, passed into factories.

Nothing reads the environment at import time. ``Settings()`` with no environment at all gives
the embedded defaults: metadata in a SQLite file under the data directory, blobs and the vector
index on local disk, the local embedding model and the offline answerer. Set
``PARLEY_DATABASE_URL`` to a ``postgresql+asyncpg://`` URL to use PostgreSQL.

Where the data lives does not depend on the current directory (:func:`default_data_dir`): the
checkout's ``var/`` when the code runs from a source checkout, else ``$XDG_DATA_HOME/parley``.
Values come from, first to last: the real environment, one ``.env`` file (:func:`env_file`),
the defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley.amqp_hosts import split_amqp_url

# --- where the data and the .env file are ------------------------------------------------------


def checkout_root() -> Path | None:
    """The source checkout this code runs from (the directory whose pyproject.toml names the
    `parley` project and holds this package), or None for an installed copy."""
    root = Path(__file__).resolve().parent.parent
    try:
        project = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'(?m)^name\s*=\s*"parley"\s*$', project) else None


#: ``root=AUTO``: the checkout this code runs from (`checkout_root`); ``root=None``: an installed copy.
AUTO: Any = "auto"


def default_data_dir(environ: Mapping[str, str] | None = None, *, root: Path | None = AUTO) -> Path:
    """The data directory when PARLEY_DATA_DIR is not set: ``<checkout>/var`` from a source checkout
    (``root``), else ``$XDG_DATA_HOME/parley`` (``~/.local/share/parley``). Never relative to the
    current directory, so every terminal finds the same database."""
    environ = os.environ if environ is None else environ
    root = checkout_root() if root is AUTO else root
    if root is not None:
        return root / "var"
    base = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "parley"


#: Values of PARLEY_ENV_FILE that mean "read no .env file".
NO_ENV_FILE = frozenset({"", "none", "off", "-"})


def env_file(environ: Mapping[str, str] | None = None, *, root: Path | None = AUTO,
             cwd: Path | None = None) -> Path | None:
    """The one ``.env`` file settings are read from (real environment variables win over it):

    - ``PARLEY_ENV_FILE`` when set (empty or ``none``: no file; a file that does not exist is an error);
    - else none while pytest runs (``PYTEST_VERSION`` is set, also in the processes a test starts), so a
      test never reads the developer's file;
    - else the checkout's ``.env`` from a source checkout, or the current directory's ``.env`` for an
      installed copy, when it exists.
    """
    environ = os.environ if environ is None else environ
    named = environ.get("PARLEY_ENV_FILE")
    if named is not None:
        if named.strip().lower() in NO_ENV_FILE:
            return None
        path = Path(named).expanduser()
        if not path.is_file():
            raise SettingsError(f"PARLEY_ENV_FILE names {named}, which is not a file "
                                "(set PARLEY_ENV_FILE=none to read no .env file)")
        return path.resolve()
    if "PYTEST_VERSION" in environ:
        return None
    root = checkout_root() if root is AUTO else root
    candidate = (root if root is not None else (cwd or Path.cwd())) / ".env"
    return candidate.resolve() if candidate.is_file() else None


class SettingsError(ValueError):
    """The configuration itself cannot be read (a PARLEY_ENV_FILE that is not there)."""


class Settings(BaseSettings):
    """Every setting. ``Settings(**overrides)`` reads the environment and :func:`env_file` (pass
    ``_env_file=None`` to read no file)."""

    def __init__(self, **values: Any) -> None:
        if "_env_file" not in values:
            values["_env_file"] = env_file()
        super().__init__(**values)

    model_config = SettingsConfigDict(
        env_prefix="PARLEY_",
        env_file=None,
        extra="ignore",
        populate_by_name=True,
    )

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir,
        json_schema_extra={"shown_default": "<checkout>/var, else $XDG_DATA_HOME/parley"},
        description="Directory for the embedded defaults: SQLite file, blobs, secret key, index, the running "
        "platform's marker. Default: the checkout's var/ when run from a source checkout, else "
        "$XDG_DATA_HOME/parley (~/.local/share/parley); never the current directory. A relative path is "
        "taken from the current directory: prefer an absolute one.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL. Default: sqlite+aiosqlite:///<data_dir>/parley.db. "
        "Use postgresql+asyncpg://user@host/db for PostgreSQL.",
    )
    db_connect_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600, description="PostgreSQL: seconds to open a connection (and to wait for a "
        "free one in the pool); past it the attempt fails as unavailable and is retried, instead of hanging.")
    db_command_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="PostgreSQL: seconds the client waits for one statement's answer "
        "(asyncpg command_timeout; the server's statement_timeout is set to the same). A silent network partition "
        "then fails the handler within this bound (retryable) instead of at the 25-minute handler timeout.")
    db_idle_in_transaction_timeout_seconds: float = Field(
        default=300.0, ge=0, le=86400, description="PostgreSQL: seconds a session may sit idle inside a "
        "transaction before the server ends it (idle_in_transaction_session_timeout; 0: never).")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts channel secrets (bot tokens, Shopify tokens) at rest. "
        "Default: generated once into <data_dir>/secret.key (mode 0600). Set it explicitly in production "
        "and keep it: rows encrypted with a lost key cannot be read.",
    )
    blob_dir: Path | None = Field(
        default=None, description="Directory for uploaded files. Default: <data_dir>/blobs."
    )
    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024, gt=0, description="Largest file a tenant may upload, in bytes."
    )
    archive_max_unpacked_bytes: int | None = Field(
        default=None, gt=0,
        description="Most bytes one uploaded ZIP archive may unpack to, all its files together; a bigger one fails "
        "(archive_too_large) before anything is unpacked. Default: 4 x max_upload_bytes (100 MB): the archive itself is "
        "at most max_upload_bytes and documents compress 2-4:1, so an honest archive fits; more belongs to `parley ingest DIR`.",
    )

    # --- plans and quotas (tenants/quotas.py; per tenant: `parley plans set`) -------------------
    # Defaults for tenants without their own limit; 0 means unlimited. Counts up to 10^12, bytes up to 2^60.
    plan_max_documents: int = Field(
        default=100_000, ge=0, le=10**12, description="Default plan: documents a tenant may store (every document "
        "not deleted: queued, indexed or failed; a replaced version stops counting once replaced); 0: unlimited.")
    plan_max_stored_bytes: int = Field(
        default=50 * 1024**3, ge=0, le=2**60, description="Default plan: bytes of uploaded files a tenant may store "
        "(the sizes of its documents that are not deleted); 0: unlimited.")
    plan_max_chunks: int = Field(
        default=5_000_000, ge=0, le=10**12, description="Default plan: indexed sections (chunks) a tenant may hold; a "
        "document that would pass it fails (quota_exceeded) with nothing indexed; 0: unlimited.")
    plan_max_products: int = Field(
        default=1_000_000, ge=0, le=10**12, description="Default plan: catalog products a tenant may hold; products "
        "past it fail in the sync report; 0: unlimited.")
    plan_max_questions_per_day: int = Field(
        default=100_000, ge=0, le=10**12, description="Default plan: customer questions answered per UTC day (DMs, "
        "web chat, widget; not `parley ask`/`eval`); 0: unlimited.")
    plan_max_questions_per_month: int = Field(
        default=2_000_000, ge=0, le=10**12, description="Default plan: customer questions answered per UTC calendar "
        "month; 0: unlimited.")
    plan_max_uploads_per_hour: int = Field(
        default=10_000, ge=0, le=10**12, description="Default plan: files a tenant may upload per UTC hour (a DM, "
        "the web API, `parley ingest`; the files inside a ZIP count as its one upload); 0: unlimited.")

    # --- message bus -------------------------------------------------------------------
    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        description="RabbitMQ URL for the job queues. A cluster: every node's host:port, comma-separated "
        "(amqp://user:pass@h1:5672,h2:5672,h3:5672/vhost); a process connects to one and moves to the next when it is lost.",
    )
    amqp_prefix: str = Field(
        default="", description="Prefix for every exchange and queue name (to share one broker between installs or test runs)."
    )
    amqp_queue_type: Literal["classic", "quorum"] = Field(
        default="classic", description="RabbitMQ queue type of the work, delay and dead-letter queues: classic "
        "(one node) or quorum (replicated over a cluster; fairness through a fast and a bulk lane per job kind). "
        "Switching an existing install needs its queues drained and deleted, or a new prefix or vhost.")
    amqp_delivery_limit: int = Field(
        default=20, ge=1, le=10_000, description="Quorum mode: times one message may return to its queue "
        "(a worker crashed or requeued it: stops and database outages count too) before the broker dead-letters "
        "it, even if our attempt counter never ran.")
    amqp_fast_lane: int = Field(
        default=4, ge=1, le=1000, description="Quorum mode: how many unfinished messages of one tenant on a queue "
        "go to its fast lane; the rest wait in the bulk lane, which workers read only when the fast lane is empty.")
    max_attempts: int = Field(default=5, ge=1, description="Attempts before a job goes to the dead-letter queue.")
    job_stall_base_seconds: float = Field(
        default=600.0, gt=0, description="A job is stalled when no item finished for this long plus its pending "
        "items times the per-item allowance (from its last progress, start or resume); `parley jobs resume` re-queues it.")
    job_stall_item_floor_seconds: float = Field(
        default=5.0, gt=0, description="Least per-item allowance of the stall deadline (the allowance is the median "
        "gap between item finishes over the last hour).")
    job_stall_item_cap_seconds: float = Field(
        default=120.0, gt=0, description="Largest per-item allowance of the stall deadline (also used with no recent finishes).")

    # --- retention (bot/privacy, tenants/retention.py; per tenant: `parley retention set`) ----------
    retention_raw_files: Literal["keep", "delete"] = Field(
        default="keep", description="Default for tenants without their own setting: keep an uploaded file after it "
        "is indexed, or delete it then (only its chunks stay; re-indexing it needs the file uploaded again)."
    )
    retention_transcript_days: int = Field(
        default=0, ge=0, description="Default for tenants without their own setting: days a conversation's messages, "
        "replies and turns are kept; 0 keeps them for ever."
    )
    retention_dead_letter_days: int = Field(
        default=30, ge=1, description="Default for tenants without their own setting (and for dead letters of no "
        "tenant): days a dead letter is kept before the retention sweep removes it."
    )
    retention_sweep_interval_seconds: float = Field(
        default=3600.0, ge=0, description="How often the gateway runs the retention sweeps (transcripts, dead "
        "letters, files kept past indexing); 0: never (run `parley retention run` instead)."
    )

    # --- vectors and embeddings --------------------------------------------------------
    vector_backend: Literal["embedded", "weaviate"] = Field(
        default="embedded", description="Vector index: the embedded default or a Weaviate server."
    )
    weaviate_url: str | None = Field(
        default=None, description="Weaviate's REST address when vector_backend=weaviate: http://host:8080, or https://host "
        "for TLS (port 443 unless given). Every data call goes over gRPC, see weaviate_grpc_url."
    )
    weaviate_grpc_url: str | None = Field(
        default=None, description="Weaviate's gRPC address, which every write and search uses: http://host:port "
        "(plaintext) or https://host:port (TLS; port 443 unless given). Default: port 50051 of weaviate_url's host, "
        "TLS when weaviate_url is https. Weaviate Cloud: https://grpc-<cluster host>."
    )
    weaviate_api_key: SecretStr | None = Field(
        default=None, description="API key for a Weaviate with authentication (Weaviate Cloud, AUTHENTICATION_APIKEY_ENABLED); "
        "sent as `Authorization: Bearer` on REST and gRPC. Unset: anonymous access."
    )
    weaviate_collection: str = Field(
        default="ParleyChunk", pattern=r"^[A-Z][A-Za-z0-9_]{0,254}$",
        description="The Weaviate collection holding every tenant's chunks (one Weaviate tenant per Parley tenant); "
        "created on first use. An existing collection must have the configuration Parley creates, or processes refuse "
        "to use it: point this at a new name instead of changing a collection that holds data."
    )
    weaviate_query_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest a Weaviate search or count may take, retries included (the client "
        "retries an unavailable server for about a minute); past it the call fails as unavailable (a search leg "
        "answers from the other leg). Writes use the client's own limits (90 s per request)."
    )
    embedding_provider: Literal["local", "openai"] = Field(
        default="local", description="Embeddings from the packaged local model or from the OpenAI API."
    )
    embedding_model: str | None = Field(default=None, description="Local embedding model name; default: the packaged one.")
    embedding_threads: int = Field(default=1, ge=1, description="Math-library threads per embedding process.")
    embedding_batch_size: int = Field(
        default=8, ge=1, description="Chunks per embedding batch (ONNX Runtime keeps memory for its largest batch: 8 holds ~400 MB)."
    )
    embedding_query_int8: bool = Field(
        default=True, description="Embed questions (not documents) with int8 linear layers built from the same weights: "
        "0.55-0.75x the fp32 time on one core, vectors at cosine ~0.99 of fp32, SciFact nDCG@10 "
        "unchanged (bench/RESULTS.md). "
        "Local built-in model only; false: fp32 for questions too."
    )
    keyword_title_weight: float = Field(
        default=0.3, ge=0, le=10, description="Weight of a chunk's title (document name, product title) against its "
        "text in the embedded index's BM25 leg. Every chunk of a document repeats its title in a short field, which "
        "full weight over-rewards: 0.3 measured best on SciFact's train queries (bench/RESULTS.md)."
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PARLEY_OPENAI_API_KEY", "OPENAI_API_KEY"),
        description="OpenAI key (OPENAI_API_KEY also works). Without one the offline answerer is used.",
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PARLEY_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
        description="Any OpenAI-compatible server (vLLM, Ollama, llama.cpp). OPENAI_BASE_URL also works.",
    )
    openai_chat_model: str = Field(default="gpt-4o-mini", description="Chat model for answers.")
    openai_embedding_model: str = Field(default="text-embedding-3-small", description="Embedding model when provider=openai.")
    openai_embedding_dimensions: int | None = Field(default=None, description="Optional reduced embedding size.")

    # --- processes ---------------------------------------------------------------------
    gateway_host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    gateway_port: int = Field(default=8080, description="Gateway port (Slack, Instagram, Shopify, web chat, admin).")
    public_url: str | None = Field(
        default=None, description="URL the outside world reaches the gateway at (OAuth redirects). Default: http://host:port."
    )
    retrieval_host: str = Field(default="127.0.0.1", description="Retrieval service bind address.")
    retrieval_port: int = Field(default=8081, description="Retrieval service port.")
    retrieval_url: str | None = Field(default=None, description="Where the gateway finds the retrieval service.")
    retrieval_urls: str | None = Field(
        default=None, description="Several retrieval replicas, comma-separated (a multi-host layout): the gateway spreads "
        "tenants over them (rendezvous hashing) and fails over to the next when one is down or slow. Set: used "
        "instead of PARLEY_RETRIEVAL_URL (`parley up --retrieval-replicas N` sets it for its gateway).",
    )
    retrieval_replicas: int = Field(
        default=1, ge=1, le=64, description="Retrieval processes `parley up` starts: replica i listens on "
        "PARLEY_RETRIEVAL_PORT + i, and the gateway is pointed at all of them.",
    )
    retrieval_try_timeout: float = Field(
        default=5.0, gt=0, description="Seconds the gateway waits for one retrieval replica before it asks the next "
        "(with several replicas; one replica waits the whole answer timeout).",
    )
    retrieval_probe_interval: float = Field(
        default=2.0, gt=0, description="Seconds between /readyz probes of a retrieval replica marked down (doubling "
        "up to 10 s while it stays down); a replica that answers ready is used again.",
    )
    service_token: SecretStr | None = Field(
        default=None,
        description="Shared secret the gateway (and `parley ask`) sends the retrieval service as `Authorization: Bearer`; "
        "the retrieval service refuses /v1/* without it. Default: generated once into <data_dir>/service.token "
        "(mode 0600), shared by processes on one data directory (`parley up`). Set the same value on both when they "
        "do not share one (docker compose, several machines).",
    )
    worker_nice: int = Field(default=19, ge=0, le=19, description="OS niceness of ingestion workers (19 = lowest priority).")
    worker_metrics_host: str = Field(default="127.0.0.1", description="Bind address of each worker's /healthz and /metrics endpoint.")
    worker_metrics_port: int = Field(
        default=0, ge=-1, le=65535,
        description="Port of a worker's /healthz and /metrics. 0: a free port, logged at start; -1: no endpoint. "
        "`parley up` gives the documents worker this port, the catalog worker the next and the webhooks worker the one after (8082, 8083, 8084 when 0).",
    )
    parse_time_limit_seconds: float = Field(
        default=60.0, gt=0, description="Seconds one document may take to parse; past it the parser is killed and the document fails (parse_timeout)."
    )
    parse_memory_limit_mb: int = Field(
        default=768, ge=64, description="Memory one document's parser may use, in MB; past it the document fails (memory_limit)."
    )
    parser_plugins: str = Field(
        default="", description="Comma-separated Python files that add document formats (ingestion.documents.extract.register_format): the gateway loads them at start-up to accept those uploads, the parser sandbox before parsing."
    )

    # --- retrieval (answer path) ------------------------------------------------------
    retrieval_top_k: int = Field(default=40, ge=1, description="Candidates taken from each search leg before fusion.")
    retrieval_fusion_method: Literal["rrf", "convex"] = Field(
        default="convex", description="How vector and keyword results are fused: a blend of each leg's min-max "
        "normalised scores (convex, measured best on SciFact) or reciprocal rank (rrf)."
    )
    retrieval_fusion_k: int = Field(default=60, ge=0, description="RRF constant k.")
    retrieval_fusion_vector_weight: float = Field(default=1.0, ge=0, description="Weight of the vector leg (0 turns it off).")
    retrieval_fusion_keyword_weight: float = Field(default=1.0, ge=0, description="Weight of the keyword (BM25) leg (0 turns it off).")
    retrieval_max_chunks_per_document: int = Field(
        default=2, ge=1, description="Most chunks one document may contribute to an answer (unless it is the only source)."
    )
    retrieval_context_token_budget: int = Field(default=1200, ge=64, description="Token budget of the context given to the answerer.")
    retrieval_memory_budget_mb: int = Field(
        default=8192, ge=0, description="Memory the retrieval service's embedded index may hold tenants in, in MB "
        "(estimated: graphs, payloads, keyword indexes). Past it the least recently used tenants are released and "
        "reload from their snapshot on their next query (its first answer then includes a load from disk: ~20 ms at 2,000 chunks, bench/many_tenants.py). "
        "The default suits a 24 GiB machine; 0: no bound.",
    )
    retrieval_max_tenants: int = Field(
        default=0, ge=0, description="Most tenants the retrieval service's embedded index holds in memory at once "
        "(least recently used released first, as for the memory budget); 0: no cap.",
    )
    retrieval_answer_cache_size: int = Field(default=10_000, ge=0, description="Answers kept in the answer cache (0 disables it).")
    retrieval_answer_cache_ttl: float = Field(default=300.0, ge=0, description="Seconds a cached answer lives (the index version invalidates it sooner).")
    retrieval_answerer: Literal["auto", "openai", "extractive"] = Field(
        default="auto", description="auto: the chat model when OpenAI is configured, else the offline extractive answerer."
    )

    # --- Slack -------------------------------------------------------------------------
    slack_signing_secret: SecretStr | None = Field(default=None, description="Slack app signing secret; enables /slack/events.")
    slack_client_id: str | None = Field(default=None, description="Slack app client id (multi-workspace OAuth install).")
    slack_client_secret: SecretStr | None = Field(default=None, description="Slack app client secret (OAuth install).")
    slack_api_url: str = Field(default="https://slack.com/api/", description="Slack Web API base URL.")

    # --- Instagram (Meta) --------------------------------------------------------------
    instagram_app_secrets: str = Field(
        default="", description="Comma-separated app secrets that may sign Instagram webhooks; enables /instagram/webhook."
    )
    instagram_verify_token: str | None = Field(default=None, description="Token Meta echoes when verifying the webhook (hub.verify_token).")
    graph_api_url: str = Field(default="https://graph.instagram.com", description="Instagram Graph API base URL.")
    gateway_answer_concurrency: int = Field(default=4, ge=1, description="Answers in flight at once per tenant in the gateway.")
    gateway_recovery_minutes: float = Field(
        default=30.0, ge=0, description="After a restart, unanswered messages younger than this are answered (once)."
    )

    # --- gateway limits (bot/limits.py) ------------------------------------------------
    gateway_sender_questions_per_minute: float = Field(
        default=12.0, gt=0, description="Questions one sender (a Slack or Instagram user, a web-chat API key) may ask per "
        "minute, sustained, after a burst of gateway_sender_question_burst. Past it a DM is acked and dropped unanswered, "
        "the first with one polite 'slow down', until the sender's bucket refills; the web chat answers 429."
    )
    gateway_sender_question_burst: int = Field(default=10, ge=1, description="Questions one sender may ask at once before the per-minute rate applies.")
    gateway_tenant_questions_per_minute: float = Field(
        default=600.0, gt=0, description="Questions one tenant's customers together may ask per minute, sustained, in one gateway."
    )
    gateway_tenant_question_burst: int = Field(default=100, ge=1, description="Questions one tenant may take at once before its per-minute rate applies.")
    gateway_answer_backlog: int = Field(
        default=200, ge=1, description="Questions of one tenant waiting for or being answered in one gateway; past it new "
        "ones are shed: acked and dropped, one notice per sender (the web chat answers 429)."
    )
    gateway_answer_backlog_total: int = Field(
        default=2000, ge=1, description="Questions of all tenants waiting for or being answered in one gateway (bounds its memory)."
    )
    gateway_auth_max_failures: int = Field(
        default=10, ge=1, description="Wrong API keys (web API and dashboard sign-in together) one address may send within "
        "gateway_auth_failure_window_seconds before it is locked out."
    )
    gateway_auth_failure_window_seconds: float = Field(default=60.0, gt=0, description="Window in which failed sign-ins are counted.")
    gateway_auth_lockout_seconds: float = Field(
        default=300.0, gt=0, description="How long a locked-out address gets 429 for every API key or sign-in, right or wrong, unchecked."
    )
    gateway_trusted_proxies: str = Field(
        default="", description="Comma-separated addresses or networks (CIDR) of reverse proxies in front of the gateway. "
        "For a request from one of them the client's address (for sign-in throttling) is the right-most X-Forwarded-For "
        "entry that is not a trusted proxy; otherwise it is the connection's peer."
    )

    # --- every HTTP server (parley/http_server.py) --------------------------------------
    http_header_timeout: float = Field(
        default=20.0, gt=0, description="Seconds a connection may take to send a complete request head, from its opening "
        "or from the previous response: idle keep-alive connections and trickled headers are closed after it (every server: "
        "gateway, retrieval, worker metrics). Keep a reverse proxy's upstream keep-alive below it."
    )
    http_body_timeout: float = Field(
        default=15.0, gt=0, description="Seconds a request body may take, extended by one second for every "
        "http_min_body_rate bytes received: a large upload on a working link goes on, a trickle gets 408 and is closed."
    )
    http_min_body_rate: int = Field(default=1024, ge=1, description="Bytes per second a request body must average once http_body_timeout has passed.")
    http_max_connections: int = Field(
        default=512, ge=1, description="Connections one server process holds open at once; a connection past it gets 503 and is closed."
    )

    # --- Shopify -----------------------------------------------------------------------
    shopify_client_id: str | None = Field(default=None, description="Shopify app client id (API key) for OAuth installs.")
    shopify_client_secret: SecretStr | None = Field(
        default=None, description="Shopify app client secret: OAuth HMAC, token exchange, webhook HMAC."
    )
    shopify_scopes: str = Field(default="read_products", description="Comma-separated Shopify access scopes to request.")
    shopify_api_version: str = Field(default="2026-10", description="Shopify Admin API version.")
    shopify_base_url: str = Field(
        default="https://{shop}", description="Where a shop's Admin API lives; {shop} is the myshopify domain."
    )
    shopify_bulk_threshold: int = Field(
        default=1000, ge=1, description="Stores with at least this many products sync through a bulk operation."
    )
    shopify_batch_size: int = Field(default=25, ge=1, description="Products per catalog message.")

    # --- outbound webhooks -------------------------------------------------------------
    webhooks_allow_private: bool = Field(
        default=False,
        description="Allow webhook endpoints on http:// and on loopback, link-local, private, multicast or unspecified "
        "addresses (development only: a tenant could otherwise make the platform call its internal network).",
    )
    webhooks_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Seconds one webhook delivery may take (connect, send, first ~4 KB of the answer); "
        "past it the attempt fails as a timeout and is retried.",
    )
    webhooks_max_attempts: int = Field(
        default=8, ge=1, description="Attempts of one webhook delivery (exponential backoff with jitter between them) "
        "before it goes to the webhooks dead-letter queue, replayable with `parley dlq replay`.",
    )
    webhooks_disable_after_hours: float = Field(
        default=24.0, gt=0, description="An endpoint whose deliveries have failed without a success for this long is "
        "disabled, with the reason on the dashboard and in `parley webhooks list` (`parley webhooks enable` turns it back on).",
    )
    webhooks_secret_overlap_hours: float = Field(
        default=24.0, ge=0, description="After `rotate-secret`, how long the previous secret still signs deliveries "
        "(beside the new one), so receivers can switch without losing one.",
    )

    # --- pass-through processing (POST /api/v1/process) -----------------------------------
    process_max_bytes: int = Field(
        default=5 * 1024 * 1024, gt=0, description="Largest file `POST /api/v1/process` takes (pass-through: processed, "
        "delivered to a webhook, kept nowhere), in bytes; a bigger one gets 413 naming this limit before anything is kept. "
        "The result (every chunk's text and vector) goes in one webhook body, several times the text's size.",
    )
    process_delivery_attempts: int = Field(
        default=3, ge=1, description="Deliveries of one pass-through result tried in one processing run, a short pause "
        "apart; when all fail the run is retried by the bus with backoff (PARLEY_MAX_ATTEMPTS runs in all, each extracting "
        "again from the sealed upload), then the request fails and only its metadata is kept.",
    )
    process_retry_pause_seconds: float = Field(
        default=1.0, ge=0, description="Pause before the second delivery attempt of a pass-through result within one run, "
        "doubled for each further one.",
    )

    # --- logging -----------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Log level.")
    log_json: bool | None = Field(
        default=None,
        description="true: one JSON object per log line; false: one readable line per event (coloured on a "
        "terminal). Unset: readable when stderr is a terminal, JSON otherwise (a pipe, a file, docker). "
        "`parley up` decides once and passes the choice to its processes.",
    )

    @field_validator("log_json", mode="before")
    @classmethod
    def _log_json_auto(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None  # decide by the terminal
        return value

    @field_validator("retrieval_urls")
    @classmethod
    def _replica_urls(cls, value: str | None) -> str | None:
        for url in (value or "").split(","):
            if url.strip() and not url.strip().startswith(("http://", "https://")):
                raise ValueError(f"PARLEY_RETRIEVAL_URLS: {url.strip()!r} is not an http:// or https:// URL "
                                 "(give the replicas comma-separated, e.g. http://10.0.0.5:8081,http://10.0.0.6:8081)")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_hosts(cls, value: str) -> str:
        split_amqp_url(value)  # AmqpUrlError (a ValueError) says what is wrong, without the password
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # SQLAlchemy 2.1 would pick psycopg for a bare URL; we ship asyncpg.
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value[len("sqlite:///") :]
        return value

    # --- derived -----------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'parley.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_blob_dir(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def effective_archive_max_unpacked_bytes(self) -> int:
        return self.archive_max_unpacked_bytes or 4 * self.max_upload_bytes

    @property
    def parser_plugin_paths(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.parser_plugins.split(",") if p.strip())

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.gateway_host}:{self.gateway_port}").rstrip("/")

    @property
    def effective_retrieval_url(self) -> str:
        return (self.retrieval_url or f"http://{self.retrieval_host}:{self.retrieval_port}").rstrip("/")

    @property
    def effective_retrieval_urls(self) -> list[str]:
        """Every retrieval replica the gateway asks: PARLEY_RETRIEVAL_URLS, else PARLEY_RETRIEVAL_URL, else the
        ``retrieval_replicas`` local ports from PARLEY_RETRIEVAL_PORT up. One URL: the single service of old."""
        if self.retrieval_urls and self.retrieval_urls.strip():
            urls = [u.strip().rstrip("/") for u in self.retrieval_urls.split(",") if u.strip()]
            return list(dict.fromkeys(urls))
        if self.retrieval_url or self.retrieval_replicas == 1:
            return [self.effective_retrieval_url]
        return [f"http://{self.retrieval_host}:{self.retrieval_port + i}" for i in range(self.retrieval_replicas)]


def describe_settings() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting: the README's table is made from this."""
    rows = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = " / ".join(alias.choices) if isinstance(alias, AliasChoices) else f"PARLEY_{name.upper()}"
        default = field.default
        if field.default_factory is not None:  # computed per machine: say how
            default = (field.json_schema_extra or {}).get("shown_default", "")  # type: ignore[union-attr]
        if isinstance(default, SecretStr):
            default = "(secret)"
        rows.append((env, "" if default is None else str(default), field.description or ""))
    return rows


# --- showing settings without their credentials -----------------------------------------------

#: A setting whose name ends in one of these words holds a credential (besides every SecretStr).
_CREDENTIAL_WORDS = frozenset({"key", "secret", "secrets", "token", "password"})
_CREDENTIAL_PARAM = re.compile(r"(?i)^(password|passwd|pwd|secret|token|api_?key|access_token|auth)$")
MASK = "***"


def is_credential(name: str, value: object = None) -> bool:
    return isinstance(value, SecretStr) or name.rsplit("_", 1)[-1] in _CREDENTIAL_WORDS


def mask_url(value: str) -> str:
    """A URL without its password (``amqp://user:***@host/``) or credential query parameters; other text unchanged."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return MASK  # unparseable: show nothing of it rather than a password
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_CREDENTIAL_PARAM.match(k) for k, _ in pairs):
            query = "&".join(f"{k}={MASK if _CREDENTIAL_PARAM.match(k) else v}" for k, v in pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return value
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def shown_value(name: str, value: object) -> str:
    """How a setting's current value is shown to a person (`parley config`): a credential as "(set)",
    a URL without its password; never the secret itself."""
    if value is None:
        return ""
    if is_credential(name, value):
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return "(set)" if raw not in ("", None) else ""
    return mask_url(str(value))


def setting_sources(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> dict[str, str]:
    """Where each setting's value comes from, by field name: ``environment``, ``.env`` (``dotenv``,
    the file :func:`env_file` picked) or ``default``; the same order of precedence as `Settings`."""
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    in_env = {key.lower() for key in environ}
    in_file = {key.lower() for key in dotenv_values(dotenv)} if dotenv is not None else set()
    sources = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = {n.lower() for n in alias.choices} if isinstance(alias, AliasChoices) else {f"parley_{name}"}
        sources[name] = "environment" if names & in_env else ".env" if names & in_file else "default"
    return sources


def current_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(environment variable, current value as `shown_value` shows it, description) for every setting."""
    return [(env, shown_value(name, getattr(settings, name)), description)
            for (env, _, description), name in zip(describe_settings(), Settings.model_fields, strict=True)]
