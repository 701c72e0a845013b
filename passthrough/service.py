"""Pass-through requests: accepting one, its status, the tenant's API upload mode.

Services take their session explicitly and never commit (the edge does). Nothing here ever
receives the file's name or bytes except `accept`, which hands them to the sealed store and
records metadata only.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.bus import Envelope, stage
from parley.bus.contracts import PROCESS_REQUESTED, QUEUE_DOCUMENTS, ProcessRequested
from parley.db import utcnow
from parley.errors import Forbidden, InvalidInput, NotFound
from passthrough.models import ProcessRequest
from passthrough.repository import ProcessRequestRepository
from passthrough.schemas import EVENT_TYPE
from tenants.models import Tenant
from tenants.repository import TenantDirectory
from webhooks.models import WebhookEndpoint

#: `tenant.api_upload_mode`: ``index`` (POST /api/documents adds to the knowledge base, the default)
#: or ``pass-through`` (it is refused; API files go through POST /api/v1/process, which keeps nothing).
INDEX, PASS_THROUGH = "index", "pass-through"
API_UPLOAD_MODES = (INDEX, PASS_THROUGH)


class PassThroughOnly(Forbidden):
    """The tenant takes API files only as pass-through processing (403)."""

    code = "pass_through_only"


class EndpointNotRegistered(InvalidInput):
    """A process request's webhook_url is not one of the tenant's endpoints for ``process.completed`` (400)."""

    code = "webhook_not_registered"


HOW_TO_REGISTER = ("register it first, subscribed to process.completed: the dashboard's Webhooks page, "
                   "or `parley webhooks add --tenant <tenant> <url> --events process.completed`")


# --- the tenant's mode ------------------------------------------------------------------------


async def api_upload_mode(session: AsyncSession, *, tenant_id: str) -> str:
    tenant = await TenantDirectory(session).by_id(tenant_id)
    if tenant is None:
        raise NotFound(f"no such tenant: {tenant_id}")
    return tenant.api_upload_mode or INDEX


async def set_api_upload_mode(session: AsyncSession, *, tenant_id: str, mode: str) -> Tenant:
    if mode not in API_UPLOAD_MODES:
        raise InvalidInput(f"unknown API upload mode {mode!r}; use one of {', '.join(API_UPLOAD_MODES)}")
    tenant = await TenantDirectory(session).by_id(tenant_id)
    if tenant is None:
        raise NotFound(f"no such tenant: {tenant_id}")
    tenant.api_upload_mode = mode
    return tenant


async def refuse_if_pass_through_only(session: AsyncSession, *, tenant_id: str) -> None:
    """`POST /api/documents`: refused with the way to go instead when the tenant is pass-through only."""
    if await api_upload_mode(session, tenant_id=tenant_id) == PASS_THROUGH:
        raise PassThroughOnly(
            "this tenant takes API files only as pass-through processing, which keeps nothing: POST the file "
            "to /api/v1/process with a webhook_url instead (an admin can change this on the dashboard's "
            "Privacy page or with `parley tenants api-uploads --tenant <tenant> index`)")


# --- requests ---------------------------------------------------------------------------------


async def endpoint_for(session: AsyncSession, *, tenant_id: str, url: str) -> WebhookEndpoint:
    """The tenant's enabled endpoint for ``url``, subscribed to ``process.completed``; a 400 that
    says how to register it otherwise."""
    from webhooks.service import endpoint_for_url

    url = (url or "").strip()
    if not url:
        raise InvalidInput("send 'webhook_url': the registered webhook endpoint that receives the result")
    endpoint = await endpoint_for_url(session, tenant_id=tenant_id, url=url)
    if endpoint is None:
        raise EndpointNotRegistered(f"{url} is not one of this tenant's webhook endpoints; {HOW_TO_REGISTER}")
    if EVENT_TYPE not in (endpoint.event_types or []):
        raise EndpointNotRegistered(f"the webhook endpoint {url} is not subscribed to {EVENT_TYPE}; add it to its events "
                                    "(the dashboard's Webhooks page) or register a separate endpoint for it")
    if not endpoint.enabled:
        raise EndpointNotRegistered(f"the webhook endpoint {url} is disabled ({endpoint.disabled_reason or 'by an admin'}); "
                                    "enable it first (the dashboard's Webhooks page or `parley webhooks enable`)")
    return endpoint


def accept(session: AsyncSession, *, tenant_id: str, request_id: str, endpoint_id: str, content_type: str,
           size_bytes: int) -> ProcessRequest:
    """Record the request (queued) and stage ``document.process_requested``, in the caller's unit of work."""
    row = ProcessRequestRepository(session, tenant_id).add(ProcessRequest(
        id=request_id, endpoint_id=endpoint_id, content_type=content_type[:128], size_bytes=size_bytes,
        status="queued", attempts=0))
    stage(session, Envelope.new(PROCESS_REQUESTED, tenant_id=tenant_id, idempotency_key=f"process:{request_id}",
                                payload=ProcessRequested(request_id=request_id, endpoint_id=endpoint_id)), QUEUE_DOCUMENTS)
    return row


async def get_request(session: AsyncSession, *, tenant_id: str, request_id: str) -> ProcessRequest:
    return await ProcessRequestRepository(session, tenant_id).resolve(request_id)


# --- the worker's bookkeeping (each in its own short unit of work) --------------------------


async def claim(session: AsyncSession, *, tenant_id: str, request_id: str) -> bool:
    """queued/processing -> processing; False when it already ended (a duplicate delivery)."""
    done = await session.execute(
        update(ProcessRequest)
        .where(ProcessRequest.tenant_id == tenant_id, ProcessRequest.id == request_id,
               ProcessRequest.status.in_(("queued", "processing")))
        .values(status="processing", updated_at=utcnow())
        .execution_options(synchronize_session=False))
    return bool(done.rowcount)


async def record_attempt(session: AsyncSession, *, tenant_id: str, request_id: str, status_code: int | None,
                         error_code: str | None, error: str | None) -> None:
    await session.execute(
        update(ProcessRequest)
        .where(ProcessRequest.tenant_id == tenant_id, ProcessRequest.id == request_id)
        .values(attempts=ProcessRequest.attempts + 1, last_status_code=status_code, error_code=error_code,
                error=error, updated_at=utcnow())
        .execution_options(synchronize_session=False))


async def finish(session: AsyncSession, *, tenant_id: str, request_id: str, status: str, result: str | None = None,
                 chunk_count: int | None = None, error_code: str | None = None, error: str | None = None) -> bool:
    """-> delivered | failed, once: False when it had ended already."""
    now = utcnow()
    values: dict[str, object] = {"status": status, "finished_at": now, "updated_at": now}
    if status == "delivered":
        values.update(delivered_at=now, result=result, chunk_count=chunk_count)
        if result == "chunks":
            values.update(error_code=None, error=None)
        else:
            values.update(error_code=error_code, error=error)
    else:
        values.update(error_code=error_code, error=error)
    done = await session.execute(
        update(ProcessRequest)
        .where(ProcessRequest.tenant_id == tenant_id, ProcessRequest.id == request_id,
               ProcessRequest.status.in_(("queued", "processing")))
        .values(**values)
        .execution_options(synchronize_session=False))
    return bool(done.rowcount)


async def endpoint_by_id(session: AsyncSession, *, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    found = await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id,
                                                                WebhookEndpoint.id == endpoint_id))
    return found.scalar_one_or_none()
