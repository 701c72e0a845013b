"""Multi-workspace install through Bolt's OAuth flow, bound to the tenant that sent the link.

    tenant admin gets   {public_url}/slack/install?tenant=<signed token>      (install_link)
    /slack/install      checks the token, then Bolt: state (signed: tenant + nonce) + cookie
                        -> 302 to slack.com/oauth/v2/authorize
    /slack/oauth_redirect  Bolt: cookie == state, state consumed once, oauth.v2.access, auth.test
                        -> our installation store, tenant taken from the state

`TenantOAuthFlow` customises exactly two of Bolt's documented extension points: issuing the state
(it carries the tenant) and storing the installation (the tenant goes into ``custom_values``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.oauth.installation_store.models.installation import Installation

from bot.channels.slack.store import INSTALL_PURPOSE, TENANT_KEY, SignedStateStore, StoreError
from bot.signing import Signer
from slack_bolt.error import BoltError


def install_link(signer: Signer, public_url: str, tenant_id: str, *, ttl: float) -> str:
    """The link a tenant's admin opens to add the bot to their workspace."""
    token = signer.sign(INSTALL_PURPOSE, {"t": tenant_id}, ttl=ttl)
    return f"{public_url.rstrip('/')}/slack/install?{urlencode({'tenant': token})}"


def tenant_of_link(signer: Signer, token: str | None) -> str:
    """The tenant an install link was made for; `Forbidden` if forged or expired."""
    return str(signer.verify(INSTALL_PURPOSE, token)["t"])


class TenantOAuthFlow(AsyncOAuthFlow):
    def __init__(self, *, link_signer: Signer, states: SignedStateStore, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.link_signer = link_signer
        self.states = states

    async def issue_new_state(self, request: AsyncBoltRequest) -> str:
        token = (request.query.get("tenant") or [None])[0]
        return await self.states.async_issue(tenant_id=tenant_of_link(self.link_signer, token))

    async def store_installation(self, request: AsyncBoltRequest, installation: Installation) -> None:
        state = (request.query.get("state") or [None])[0]
        installation.set_custom_value(TENANT_KEY, self.states.tenant_of(state))
        try:
            await super().store_installation(request, installation)
        except StoreError as exc:
            raise BoltError(str(exc)) from exc
