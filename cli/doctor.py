"""Configuration and connectivity checks: ``parley doctor`` runs them all, ``parley up`` the ones a
start needs. Each check says ok / warn / fail, what it found, and for warn or fail what to do.

Checks never change anything (no migration, no generated key, no declared queue); network checks
are bounded by a few seconds each and run concurrently.
"""

from __future__ import annotations

import asyncio
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.db import unit_of_work
from parley.logging import silenced
from parley.settings import Settings
from tenants.models import ChannelInstallation

Status = Literal["ok", "warn", "fail"]

TIMEOUT = 5.0
START_RABBITMQ = (
    "start RabbitMQ with one of: `sudo rabbitmq-server -detached` (Debian/Ubuntu: apt-get install rabbitmq-server); "
    "`docker run -d -p 5672:5672 rabbitmq:4.1`; `bash scripts/services.sh rabbitmq` (from the checkout; starts or "
    "installs it); or try everything in one process without it: `parley up --single-process`"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


# --- descriptions -------------------------------------------------------------------------


def describe_database(settings: Settings) -> str:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        return f"SQLite file {url.split(':///', 1)[1]}"
    return "PostgreSQL " + url.split("@")[-1]  # never the password


def describe_broker(settings: Settings) -> str:
    from parley.amqp_hosts import host_label, split_amqp_url

    hosts = split_amqp_url(settings.amqp_url)  # a cluster: every node, in the order they are tried
    path = urlsplit(hosts[0]).path
    return ",".join(host_label(h) for h in hosts) + (path if path not in ("", "/") else "")


def uses_openai_answers(settings: Settings) -> bool:
    if settings.retrieval_answerer == "extractive":
        return False
    if settings.retrieval_answerer == "openai":
        return True
    return bool(settings.openai_api_key or settings.openai_base_url)


# --- storage ------------------------------------------------------------------------------


def _writable(path: Path) -> tuple[bool, str]:
    """Can this process create files in ``path`` (or in the nearest existing parent, which it would create)?"""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return False, f"{probe} is not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".parley-doctor-"):
            pass
    except OSError as exc:
        return False, f"cannot write in {probe}: {exc.strerror or exc}"
    return True, "" if probe == path else "created at first start"


def check_data_dir(settings: Settings) -> Check:
    problems, notes = [], []
    for label, path in (("data", settings.data_dir), ("blobs", settings.effective_blob_dir)):
        ok, note = _writable(Path(path))
        (notes if ok else problems).append(f"{label} {path}{': ' + note if note else ''}")
    if problems:
        return Check("storage", "fail", "; ".join(problems),
                     "make the directories writable by this user, or point PARLEY_DATA_DIR / PARLEY_BLOB_DIR elsewhere")
    return Check("storage", "ok", "writable: " + "; ".join(notes))


# --- database -----------------------------------------------------------------------------


async def check_database(settings: Settings, *, need_head: bool = True) -> Check:
    """Reachable, and (``need_head``) migrated to the newest revision."""
    from cli import migrations
    from parley.db import create_engine

    where = describe_database(settings)
    if settings.is_sqlite:
        path = Path(settings.effective_database_url.split(":///", 1)[1])
        if not path.exists():
            if need_head:
                return Check("database", "fail", f"{where} does not exist yet", "run `parley migrate` (or `parley up`)")
            return Check("database", "ok", f"{where} (new: the migrations create it)")
    engine = create_engine(settings, "doctor", **({} if settings.is_sqlite else {"connect_args": {"timeout": TIMEOUT}}))
    try:
        async with asyncio.timeout(TIMEOUT + 1):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await migrations.current_revision(engine)
    except Exception as exc:  # noqa: BLE001 - reported
        fix = ("start PostgreSQL (`bash scripts/services.sh postgres`, or `docker compose up -d postgres`) and check "
               "PARLEY_DATABASE_URL" if not settings.is_sqlite else "check that the file is a Parley database and readable")
        return Check("database", "fail", f"{where} not reachable: {_short(exc)}", fix)
    finally:
        await engine.dispose()
    head = migrations.head_revision()
    if current == head:
        return Check("database", "ok", f"{where}, migrated to head ({head})")
    if not need_head:
        return Check("database", "ok", f"{where}, at {current or 'no schema'}; migrating to {head}")
    return Check("database", "fail", f"{where} is at {current or 'no schema'}, the code expects {head}",
                 "run `parley migrate`")


async def check_secret_key(settings: Settings, sessions: async_sessionmaker[AsyncSession] | None) -> Check:
    from parley.crypto import SecretBox
    from parley.errors import ConfigurationError

    path = Path(settings.data_dir) / "secret.key"
    if settings.secret_key is not None:
        source, raw = "PARLEY_SECRET_KEY", settings.secret_key.get_secret_value().encode()
    elif path.exists():
        source = str(path)
        try:
            raw = path.read_bytes().strip()
        except OSError as exc:
            return Check("secret key", "fail", f"{path} is not readable: {exc.strerror}", "fix its owner and mode (0600)")
    else:
        stored = await _stored_secret(sessions)
        if stored:
            return Check("secret key", "fail", f"channel secrets are stored but there is no key ({path} is missing)",
                         "restore var/secret.key from the backup, or set PARLEY_SECRET_KEY to the key they were "
                         "encrypted with; otherwise reconnect the channels")
        return Check("secret key", "warn", f"none yet: one is generated into {path} at first use",
                     "set PARLEY_SECRET_KEY in production (and keep it: secrets encrypted with a lost key are unreadable)")
    try:
        box = SecretBox(raw)
    except ConfigurationError as exc:
        return Check("secret key", "fail", f"{source}: {exc.message}",
                     "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'")
    notes = []
    status: Status = "ok"
    fix = ""
    if source == str(path) and stat.S_IMODE(path.stat().st_mode) & 0o077:
        status, fix = "warn", f"chmod 600 {path}"
        notes.append("readable by other users")
    if source == str(path) and not settings.is_sqlite:
        status = "warn"
        fix = fix or "set PARLEY_SECRET_KEY to the same key on every machine (the key file is per machine)"
        notes.append("a key file with a shared database")
    stored = await _stored_secret(sessions)
    if stored:
        try:
            box.decrypt(stored)
        except ConfigurationError:
            return Check("secret key", "fail", f"{source} cannot decrypt the stored channel secrets",
                         "restore the key they were encrypted with (var/secret.key from the backup, or the old "
                         "PARLEY_SECRET_KEY), or reconnect the channels")
        notes.append("decrypts the stored channel secrets")
    else:
        notes.append("no stored channel secret to try it on")
    return Check("secret key", status, f"{source}: " + "; ".join(notes), fix)


#: Shorter than this, a service token set by hand is worth a warning (the generated ones have 43 characters).
MIN_SERVICE_TOKEN = 24


def check_service_token(settings: Settings) -> Check:
    """The credential the gateway presents to the retrieval service: set, or in a readable, private file."""
    from parley.crypto import SERVICE_TOKEN_FILE

    name = "service token"
    if settings.service_token is not None:
        length = len(settings.service_token.get_secret_value().strip())
        if not length:
            return Check(name, "fail", "PARLEY_SERVICE_TOKEN is set but empty", "set it to a long random string "
                         "(python -c 'import secrets; print(secrets.token_urlsafe(32))') or unset it")
        if length < MIN_SERVICE_TOKEN:
            return Check(name, "warn", f"PARLEY_SERVICE_TOKEN has only {length} characters",
                         "use a long random one: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return Check(name, "ok", "PARLEY_SERVICE_TOKEN (the gateway and the retrieval service must share it)")
    path = Path(settings.data_dir) / SERVICE_TOKEN_FILE
    if not path.exists():
        return Check(name, "ok", f"none yet: generated into {path} at first start (shared by `parley up`'s processes)")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        return Check(name, "fail", f"{path} is not readable: {getattr(exc, 'strerror', None) or exc}",
                     f"fix its owner and mode (chmod 600 {path}), or delete it to have a new one generated")
    if not token:
        return Check(name, "fail", f"{path} is empty", "delete it (a new one is generated at start) or set PARLEY_SERVICE_TOKEN")
    notes = [str(path)]
    status: Status = "ok"
    fix = ""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        status, fix = "warn", f"chmod 600 {path}"
        notes.append("readable by other users")
    if not settings.is_sqlite:
        status = "warn"
        fix = fix or "set PARLEY_SERVICE_TOKEN to the same value for the gateway and the retrieval service on every machine"
        notes.append("a per-machine file with a shared database")
    return Check(name, status, "; ".join(notes), fix)


async def _stored_secret(sessions: async_sessionmaker[AsyncSession] | None) -> str | None:
    """One stored, encrypted channel secret (None when there is none or it cannot be read)."""
    if sessions is None:
        return None
    try:
        async with asyncio.timeout(TIMEOUT):
            async with unit_of_work(sessions, admin=True) as session:
                found = await session.execute(select(ChannelInstallation.secrets_encrypted)
                                              .where(ChannelInstallation.secrets_encrypted.is_not(None)).limit(1))
                return found.scalar_one_or_none()
    except Exception:  # noqa: BLE001 - the database check reports why
        return None


async def _queue_mismatch(settings: Settings, connection: Any) -> str | None:
    """What to do when a work queue this install would declare already exists with other arguments (a
    classic install switched to PARLEY_AMQP_QUEUE_TYPE=quorum, or back): every process would stop at
    start on RabbitMQ's 406. Only queues that exist are compared (a passive look first), so the doctor
    never creates one. None when they match, do not exist yet, or the broker cannot be asked."""
    import aiormq

    from parley import runtime
    from parley.bus.rabbit import declare_work_queue
    from parley.bus.topology import FAST, TopologyMismatch

    topology = runtime.topology(settings)
    try:
        for kind in topology.queues:
            try:  # each on a channel of its own: a failed declare closes its channel
                async with connection.channel() as channel:
                    await channel.declare_queue(topology.lane_queue(kind, FAST), passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                continue
            try:  # as the processes declare it: the same arguments are a no-op, others a TopologyMismatch
                async with connection.channel() as channel:
                    await declare_work_queue(channel, topology, kind, FAST)
            except TopologyMismatch as exc:
                return str(exc)
    except Exception:  # noqa: BLE001 - a broker that drops us here was reported reachable; nothing to add
        return None
    return None


# --- broker, index, models ----------------------------------------------------------------


async def check_broker(settings: Settings) -> Check:
    """One host: reachable or not. A cluster (several hosts in PARLEY_AMQP_URL): every node is asked,
    and a node down is a warning naming it (the processes use the others meanwhile), not an ok."""
    import aio_pika

    from parley.amqp_hosts import host_label, split_amqp_url

    where = describe_broker(settings)
    prefix = f", queue prefix {settings.amqp_prefix!r}" if settings.amqp_prefix else ""
    hosts = split_amqp_url(settings.amqp_url)

    async def probe(url: str) -> Any:
        """The node's connection, or why there is none."""
        try:
            async with asyncio.timeout(TIMEOUT + 1):
                return await aio_pika.connect(url, timeout=TIMEOUT, client_properties={"connection_name": "parley-doctor"})
        except Exception as exc:  # noqa: BLE001 - reported
            return exc

    with silenced("aiormq.connection"):  # reported below, with what to do
        probed = await asyncio.gather(*(probe(h) for h in hosts))
    down = [(host_label(h), got) for h, got in zip(hosts, probed) if isinstance(got, Exception)]
    live = [got for got in probed if not isinstance(got, Exception)]
    try:  # the queues are compared over the first live node's connection
        mismatch = await _queue_mismatch(settings, live[0]) if live else None
    finally:
        for connection in live:
            await connection.close()
    if len(down) == len(hosts):
        if len(hosts) == 1:
            return Check("rabbitmq", "fail", f"not reachable at {where} (PARLEY_AMQP_URL): {_short(down[0][1])}", START_RABBITMQ)
        return Check("rabbitmq", "fail", f"no node of {where} reachable (PARLEY_AMQP_URL): "
                     + "; ".join(f"{h}: {_short(e)}" for h, e in down), START_RABBITMQ)
    if mismatch is not None:
        return Check("rabbitmq", "fail", f"reachable at {where}{prefix}, but its queues are of another type", mismatch)
    if down:
        return Check("rabbitmq", "warn", f"{len(hosts) - len(down)} of {len(hosts)} nodes reachable ({where}{prefix}); "
                     "down: " + "; ".join(f"{h}: {_short(e)}" for h, e in down),
                     "start the node(s) again: meanwhile every process uses the others (with quorum queues "
                     "nothing is lost while a majority is up)")
    if len(hosts) > 1:
        return Check("rabbitmq", "ok", f"all {len(hosts)} nodes reachable at {where}{prefix}")
    return Check("rabbitmq", "ok", f"reachable at {where}{prefix}")


def check_embedding_model(settings: Settings) -> Check:
    from parley.errors import ConfigurationError

    if settings.embedding_provider == "openai":
        if settings.openai_api_key or settings.openai_base_url:
            return Check("embedding model", "ok", f"OpenAI {settings.openai_embedding_model}"
                         + (f" at {settings.openai_base_url}" if settings.openai_base_url else ""))
        return Check("embedding model", "fail", "PARLEY_EMBEDDING_PROVIDER=openai without a key or base URL",
                     "set OPENAI_API_KEY (or OPENAI_BASE_URL), or use the local model (PARLEY_EMBEDDING_PROVIDER=local)")
    from parley.embeddings.local import model_installed, resolve_model

    try:
        spec = resolve_model(settings.embedding_model)
    except ConfigurationError as exc:
        return Check("embedding model", "fail", exc.message, "fix PARLEY_EMBEDDING_MODEL")
    if not model_installed(spec.name):
        return Check("embedding model", "fail", f"local {spec.name} is not installed", spec.install)
    return Check("embedding model", "ok", f"local {spec.name} ({spec.dimension} dimensions), installed")


async def check_vector_index(settings: Settings) -> Check:
    if settings.vector_backend == "embedded":
        path = Path(settings.data_dir) / "vectors"
        ok, note = _writable(path)
        if not ok:
            return Check("vector index", "fail", f"embedded, but {note}", "make PARLEY_DATA_DIR writable")
        return Check("vector index", "ok", f"embedded (searchable copies under {path}{'; ' + note if note else ''})")
    if not settings.weaviate_url:
        return Check("vector index", "fail", "PARLEY_VECTOR_BACKEND=weaviate without PARLEY_WEAVIATE_URL",
                     "set PARLEY_WEAVIATE_URL (e.g. http://127.0.0.1:8080)")
    return await check_weaviate(settings)


#: Fix per error code of the Weaviate backend (parley.vectors.weaviate_errors and the collection check).
WEAVIATE_FIXES = {
    "vector_index_unauthorized": "set PARLEY_WEAVIATE_API_KEY to a key the server accepts (with read and write access "
                                 "to the collection)",
    "vector_index_misconfigured": "set PARLEY_WEAVIATE_COLLECTION to a new name (Parley creates it at first use) and "
                                  "reindex, or delete the collection if nothing else uses it",
    "configuration_error": "fix PARLEY_WEAVIATE_URL / PARLEY_WEAVIATE_GRPC_URL",
}
START_WEAVIATE = ("start it (`docker compose up -d weaviate`), or fix PARLEY_WEAVIATE_URL and PARLEY_WEAVIATE_GRPC_URL "
                  "(gRPC: port 50051 of the same host unless set; every write and search uses it)")


async def check_weaviate(settings: Settings) -> Check:
    """Connect the way the index does (REST, then the gRPC health check every data call depends on),
    check the collection's configuration, and make one gRPC call on it; never creates anything."""
    from parley.errors import ParleyError
    from parley.vectors.weaviate_index import WeaviateVectorIndex

    try:
        index = WeaviateVectorIndex.from_settings(settings)
    except ParleyError as exc:
        return Check("vector index", "fail", exc.message, WEAVIATE_FIXES["configuration_error"])
    try:
        with silenced("weaviate-client"):
            async with asyncio.timeout(3 * TIMEOUT):
                detail = await index.probe()
    except ParleyError as exc:
        return Check("vector index", "fail", exc.message[:400], WEAVIATE_FIXES.get(exc.code, START_WEAVIATE))
    except TimeoutError:
        return Check("vector index", "fail", f"Weaviate at {settings.weaviate_url} did not answer within "
                     f"{3 * TIMEOUT:g}s", START_WEAVIATE)
    finally:
        await index.aclose()
    return Check("vector index", "ok", detail)


async def check_answerer(settings: Settings) -> Check:
    if not uses_openai_answers(settings):
        why = "PARLEY_RETRIEVAL_ANSWERER=extractive" if settings.retrieval_answerer == "extractive" else "no OpenAI key"
        return Check("answerer", "ok", f"offline extractive answerer (quotes the best passages; {why})")
    if not (settings.openai_api_key or settings.openai_base_url):
        return Check("answerer", "fail", "PARLEY_RETRIEVAL_ANSWERER=openai without a key or base URL",
                     "set OPENAI_API_KEY or OPENAI_BASE_URL, or PARLEY_RETRIEVAL_ANSWERER=auto")
    what = f"OpenAI-compatible chat model {settings.openai_chat_model}"
    if not settings.openai_base_url:
        return Check("answerer", "ok", f"{what} at api.openai.com (key set; not probed)")
    status, problem = await _http_status(settings.openai_base_url.rstrip("/") + "/models", bearer=(
        settings.openai_api_key.get_secret_value() if settings.openai_api_key else None))
    if status is None:
        return Check("answerer", "fail", f"{what}: {settings.openai_base_url} not reachable: {problem}",
                     "start the server or fix OPENAI_BASE_URL (answers fall back to quoting passages meanwhile)")
    if status in (401, 403):
        return Check("answerer", "warn", f"{what} at {settings.openai_base_url}: the server refused the key ({status})",
                     "check OPENAI_API_KEY")
    return Check("answerer", "ok", f"{what} at {settings.openai_base_url} (reachable)")


# --- the outside world --------------------------------------------------------------------


def check_public_url(settings: Settings) -> Check:
    url = settings.effective_public_url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check("public url", "fail", f"{url!r} is not an http(s) URL", "set PARLEY_PUBLIC_URL to e.g. https://parley.example.com")
    vendors = [name for name, on in (("Slack", settings.slack_signing_secret), ("Instagram", settings.instagram_app_secrets),
                                     ("Shopify", settings.shopify_client_id)) if on]
    local = parts.hostname in ("localhost", "0.0.0.0", "::1") or parts.hostname.startswith("127.")
    default = "" if settings.public_url else " (default; set PARLEY_PUBLIC_URL when vendors must reach it)"
    if vendors and (local or parts.scheme != "https"):
        return Check("public url", "warn", f"{url}: {', '.join(vendors)} cannot deliver webhooks to it",
                     "set PARLEY_PUBLIC_URL to a public https URL that reaches the gateway (a reverse proxy or a tunnel)")
    return Check("public url", "ok", f"{url}{default}; web chat at {url}/chat")


def check_webhooks(settings: Settings) -> Check:
    """Outbound webhooks: private addresses allowed is for development only."""
    limits = (f"timeout {settings.webhooks_timeout_seconds:g} s, {settings.webhooks_max_attempts} attempts, "
              f"disabled after {settings.webhooks_disable_after_hours:g} h failing")
    if settings.webhooks_allow_private:
        return Check("webhooks", "warn", f"PARLEY_WEBHOOKS_ALLOW_PRIVATE is on: tenants may point webhooks at http:// "
                     f"and at this machine's network; {limits}", "unset PARLEY_WEBHOOKS_ALLOW_PRIVATE outside development")
    return Check("webhooks", "ok", f"https to public addresses only; {limits}")


def check_channels(settings: Settings) -> list[Check]:
    checks = []
    signing, cid, csecret = settings.slack_signing_secret, settings.slack_client_id, settings.slack_client_secret
    if not (signing or cid or csecret):
        checks.append(Check("slack", "warn", "not configured: Slack DMs are off",
                            "set PARLEY_SLACK_SIGNING_SECRET (and PARLEY_SLACK_CLIENT_ID / _SECRET for OAuth installs)"))
    elif bool(cid) != bool(csecret):
        checks.append(Check("slack", "fail", "only one of PARLEY_SLACK_CLIENT_ID / PARLEY_SLACK_CLIENT_SECRET is set",
                            "set both (OAuth install) or neither"))
    elif not signing:
        checks.append(Check("slack", "fail", "OAuth is configured but PARLEY_SLACK_SIGNING_SECRET is not: events cannot be verified",
                            "set PARLEY_SLACK_SIGNING_SECRET (Slack app > Basic Information)"))
    else:
        checks.append(Check("slack", "ok", "events enabled" + ("; OAuth install enabled" if cid else "; OAuth install off")))
    secrets, token = settings.instagram_app_secrets.strip(), settings.instagram_verify_token
    if not secrets and not token:
        checks.append(Check("instagram", "warn", "not configured: Instagram DMs are off",
                            "set PARLEY_INSTAGRAM_APP_SECRETS and PARLEY_INSTAGRAM_VERIFY_TOKEN"))
    elif not secrets:
        checks.append(Check("instagram", "fail", "a verify token without app secrets: webhooks cannot be verified",
                            "set PARLEY_INSTAGRAM_APP_SECRETS"))
    elif not token:
        checks.append(Check("instagram", "warn", "webhooks enabled, but Meta cannot verify the subscription",
                            "set PARLEY_INSTAGRAM_VERIFY_TOKEN (hub.verify_token)"))
    else:
        checks.append(Check("instagram", "ok", "webhooks enabled"))
    sid, ssecret = settings.shopify_client_id, settings.shopify_client_secret
    if not sid and not ssecret:
        checks.append(Check("shopify", "warn", "public app not configured: stores connect with custom-app tokens only",
                            "set PARLEY_SHOPIFY_CLIENT_ID and PARLEY_SHOPIFY_CLIENT_SECRET for OAuth installs"))
    elif not (sid and ssecret):
        checks.append(Check("shopify", "fail", "only one of PARLEY_SHOPIFY_CLIENT_ID / PARLEY_SHOPIFY_CLIENT_SECRET is set",
                            "set both or neither"))
    else:
        checks.append(Check("shopify", "ok", f"OAuth installs and webhooks enabled (API {settings.shopify_api_version})"))
    return checks


# --- the two lists ------------------------------------------------------------------------


async def preflight(settings: Settings, *, single_process: bool = False, migrate: bool = True) -> list[Check]:
    """What `parley up` needs before it starts anything (``migrate``: the migrations run next, so the
    database need not be at head yet)."""
    broker = (asyncio.sleep(0, Check("rabbitmq", "ok", "not used: in-memory broker (single process)"))
              if single_process else check_broker(settings))
    database, rabbit, index, answerer = await asyncio.gather(
        check_database(settings, need_head=not migrate), broker, check_vector_index(settings), check_answerer(settings))
    checks = [database, rabbit, index, answerer, check_embedding_model(settings), check_data_dir(settings)]
    if not single_process:  # one process asks its retrieval service in-process: no credential between them
        checks.append(check_service_token(settings))
    return checks


async def doctor(settings: Settings) -> list[Check]:
    """Every check, in the order a person reads them."""
    from parley.db import create_engine, create_sessionmaker

    database, rabbit, index, answerer = await asyncio.gather(
        check_database(settings, need_head=True), check_broker(settings), check_vector_index(settings),
        check_answerer(settings))
    secret: Check
    if database.status == "ok":
        engine = create_engine(settings, "doctor")
        try:
            secret = await check_secret_key(settings, create_sessionmaker(engine))
        finally:
            await engine.dispose()
    else:
        secret = await check_secret_key(settings, None)
    return [check_data_dir(settings), database, rabbit, secret, check_service_token(settings), check_embedding_model(settings),
            index, answerer, check_public_url(settings), check_webhooks(settings), *check_channels(settings)]


# --- helpers ------------------------------------------------------------------------------


async def _http_status(url: str, *, bearer: str | None = None) -> tuple[int | None, str]:
    import aiohttp

    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
            async with http.get(url, headers=headers, allow_redirects=False) as response:
                return response.status, ""
    except Exception as exc:  # noqa: BLE001 - reported
        return None, _short(exc)


def _short(exc: BaseException) -> str:
    text_ = str(exc) or type(exc).__name__
    return text_.splitlines()[0][:200] if text_ else type(exc).__name__
