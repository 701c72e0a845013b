"""Multi-workspace install through Bolt's OAuth flow, bound to the tenant that sent the link.

    tenant admin gets   {public_url}/slack/install?tenant=<signed token>      (install_link)
    /slack/install      checks the token (signed: tenant + link id + expiry; not used yet), then
                        Bolt: state (signed: tenant + nonce + link id) + cookie
                        -> 302 to slack.com/oauth/v2/authorize
    /slack/oauth_redirect  Bolt: cookie == state, state and its link consumed once, oauth.v2.access,
                        auth.test -> our installation store, tenant taken from the state

An install link is single use: the OAuth round trip it starts spends it when Slack redirects back
(opening it, or a mail scanner fetching it, does not), so a copy of a used link installs nothing.
It lives `bot.config.GatewayConfig.slack_install_link_ttl` (a day) at most.

`TenantOAuthFlow` customises exactly two of Bolt's documented extension points: issuing the state
(it carries the tenant) and storing the installation (the tenant goes into ``custom_values``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.oauth.installation_store.models.installation import Installation

from bot.channels.slack.store import INSTALL_PURPOSE, TENANT_KEY, SignedStateStore, StoreError
from bot.signing import Signer
from parley.db import new_id
from parley.errors import Forbidden
from slack_bolt.error import BoltError


@dataclass(frozen=True)
class InstallLink:
    tenant_id: str
    id: str  # what records its single use


def install_link(signer: Signer, public_url: str, tenant_id: str, *, ttl: float) -> str:
    """The link a tenant's admin opens to add the bot to their workspace (single use)."""
    token = signer.sign(INSTALL_PURPOSE, {"t": tenant_id, "l": new_id()}, ttl=ttl)
    return f"{public_url.rstrip('/')}/slack/install?{urlencode({'tenant': token})}"


def link_of(signer: Signer, token: str | None) -> InstallLink:
    """The install link a token proves; `Forbidden` if forged, expired or made before links were
    single use (no link id)."""
    data = signer.verify(INSTALL_PURPOSE, token)
    tenant_id, link_id = data.get("t"), data.get("l")
    if not (isinstance(tenant_id, str) and tenant_id and isinstance(link_id, str) and link_id):
        raise Forbidden("this install link is no longer valid; ask for a new one")
    return InstallLink(tenant_id, link_id)


class TenantOAuthFlow(AsyncOAuthFlow):
    def __init__(self, *, link_signer: Signer, states: SignedStateStore, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.link_signer = link_signer
        self.states = states

    async def issue_new_state(self, request: AsyncBoltRequest) -> str:
        link = link_of(self.link_signer, (request.query.get("tenant") or [None])[0])
        return await self.states.async_issue(tenant_id=link.tenant_id, link_id=link.id)

    async def store_installation(self, request: AsyncBoltRequest, installation: Installation) -> None:
        state = (request.query.get("state") or [None])[0]
        installation.set_custom_value(TENANT_KEY, self.states.tenant_of(state))
        try:
            await super().store_installation(request, installation)
        except StoreError as exc:
            raise BoltError(str(exc)) from exc
