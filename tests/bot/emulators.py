"""Local HTTP servers that speak the vendor APIs the gateway calls (never patches of our code).

`SlackEmulator`: ``auth.test``, ``auth.revoke``, ``chat.postMessage``, ``files.info``, ``users.info`` (the
documented user object; ``missing_scope`` for a token without users:read), ``oauth.v2.access`` and
file downloads under ``/files-pri/`` that check the bot token like Slack does - a bad token gets
an HTML login page with status 200. Failures can be scripted per method (429 + Retry-After, 500,
``ok: false`` errors).

``chat.update`` and ``views.open`` (the modal needs a ``trigger_id``) are recorded in ``updated`` and ``views``.

`GraphEmulator`: Meta's Send API ``POST /{version}/me/messages`` with a Bearer token, Graph-style
error bodies on scripted failures, Meta's messaging windows for customers whose last message it
knows (``customer_wrote``; `Stack.post_instagram` tells it): a send more than 24 hours after it
is refused with Graph's error (code 10, subcode 2018278), a ``MESSAGE_TAG`` send tagged
``HUMAN_AGENT`` is allowed up to 7 days, ``GET /{version}/me`` (the token's account; OAuthException 190
for a bad token), and a CDN path for attachment downloads.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"


@dataclass
class Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        raw = await request.read()
        if request.content_type == "application/json":
            params.update(json.loads(raw or b"{}"))
        else:
            params.update({k: v[0] for k, v in parse_qs(raw.decode()).items()})
    return params


def _bearer(request: web.Request, params: dict[str, Any]) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):]
    return params.get("token")


class SlackEmulator:
    def __init__(self) -> None:
        #: bot token -> what auth.test says about it
        self.tokens: dict[str, dict[str, Any]] = {}
        #: tokens that may download files (a token without files:read gets the login page)
        self.file_tokens: set[str] = set()
        self.files: dict[str, tuple[bytes, str]] = {}
        self.file_info: dict[str, dict[str, Any]] = {}
        #: user id -> the user object users.info returns
        self.users: dict[str, dict[str, Any]] = {}
        #: tokens without the users:read scope
        self.no_users_read: set[str] = set()
        self.oauth_codes: dict[str, dict[str, Any]] = {}
        self.posted: list[dict[str, Any]] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.script: dict[str, list[Scripted]] = defaultdict(list)
        self.downloads: list[str] = []
        #: chat.update and views.open calls, as sent
        self.updated: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        #: tokens auth.revoke was called with (each then answers invalid_auth)
        self.revoked: list[str] = []
        self._posted = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self.api)
        app.router.add_get("/files-pri/{path:.*}", self.download)
        return app

    def add_bot(self, token: str, *, team_id: str, bot_id: str, bot_user_id: str, files: bool = True) -> None:
        self.tokens[token] = {"ok": True, "team_id": team_id, "team": "Test team", "user_id": bot_user_id, "bot_id": bot_id,
                              "user": "parley", "url": "https://test.slack.com/", "is_enterprise_install": False}
        if files:
            self.file_tokens.add(token)

    def add_org_bot(self, token: str, *, enterprise_id: str, bot_id: str, bot_user_id: str) -> None:
        """An org-wide (Enterprise Grid) install's bot token: auth.test names the organisation."""
        self.tokens[token] = {"ok": True, "url": "https://acme-org.enterprise.slack.com/", "team": "Acme Org",
                              "user": "parley", "team_id": enterprise_id, "user_id": bot_user_id, "bot_id": bot_id,
                              "enterprise_id": enterprise_id, "is_enterprise_install": True}
        self.file_tokens.add(token)

    def add_user(self, user_id: str, *, team_id: str, name: str = "", admin: bool = False, owner: bool = False,
                 guest: bool = False, deleted: bool = False) -> dict[str, Any]:
        """A workspace member as users.info describes one (api.slack.com/methods/users.info)."""
        name = name or user_id.lower()
        self.users[user_id] = {
            "id": user_id, "team_id": team_id, "name": name, "deleted": deleted, "color": "9f69e7", "real_name": name.title(),
            "tz": "Europe/Berlin", "tz_label": "Central European Time", "tz_offset": 3600,
            "profile": {"real_name": name.title(), "display_name": name, "real_name_normalized": name.title(),
                        "display_name_normalized": name, "email": f"{name}@example.com", "team": team_id},
            "is_admin": admin or owner, "is_owner": owner, "is_primary_owner": False, "is_restricted": guest,
            "is_ultra_restricted": False, "is_bot": False, "updated": 1502138686, "is_app_user": False, "has_2fa": False,
        }
        return self.users[user_id]

    def fail(self, method: str, status: int, body: dict[str, Any] | None = None, **headers: str) -> None:
        self.script[method].append(Scripted(status, body or {"ok": False, "error": "internal_error"}, headers))

    async def api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await _params(request)
        self.calls[method] += 1
        if self.script.get(method):
            s = self.script[method].pop(0)
            if s.status >= 500:
                return web.Response(status=s.status, text="upstream error", headers=s.headers)
            return web.json_response(s.body, status=s.status, headers=s.headers)
        if method == "oauth.v2.access":
            result = self.oauth_codes.pop(str(params.get("code")), None)
            return web.json_response(result or {"ok": False, "error": "invalid_code"})
        token = _bearer(request, params)
        if token not in self.tokens:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return web.json_response(self.tokens[token])
        if method == "auth.revoke":  # docs.slack.dev/reference/methods/auth.revoke: the token stops working
            self.revoked.append(token)
            self.tokens.pop(token, None)
            self.file_tokens.discard(token)
            return web.json_response({"ok": True, "revoked": True})
        if method == "chat.postMessage":
            async with self._posted:
                self.posted.append({**params, "token": token})
                self._posted.notify_all()
            return web.json_response({"ok": True, "channel": params.get("channel"), "ts": f"{len(self.posted)}.000100"})
        if method == "chat.update":
            if not params.get("channel") or not params.get("ts"):
                return web.json_response({"ok": False, "error": "message_not_found"})
            self.updated.append({**params, "token": token})
            return web.json_response({"ok": True, "channel": params["channel"], "ts": params["ts"],
                                      "text": params.get("text", "")})
        if method == "views.open":
            if not params.get("trigger_id"):
                return web.json_response({"ok": False, "error": "invalid_trigger_id"})
            view = params.get("view")
            if isinstance(view, str):
                view = json.loads(view)
            self.views.append({**params, "view": view, "token": token})
            return web.json_response({"ok": True, "view": {**(view or {}), "id": f"V{len(self.views):010d}"}})
        if method == "users.info":
            if token in self.no_users_read:
                return json_response_missing_scope("users:read")
            user = self.users.get(str(params.get("user")))
            return web.json_response({"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"})
        if method == "files.info":
            info = self.file_info.get(str(params.get("file")))
            return web.json_response({"ok": True, "file": info} if info else {"ok": False, "error": "file_not_found"})
        return web.json_response({"ok": False, "error": "unknown_method"}, status=404)

    async def download(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.downloads.append(path)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.file_tokens:
            return web.Response(body=LOGIN_PAGE, content_type="text/html", status=200)
        if path not in self.files:
            return web.Response(status=404)
        body, content_type = self.files[path]
        return web.Response(body=body, content_type=content_type)

    async def wait_posted(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        async with self._posted:
            await asyncio.wait_for(self._posted.wait_for(lambda: len(self.posted) >= n), timeout)
        return list(self.posted)


def json_response_missing_scope(needed: str) -> web.Response:
    return web.json_response({"ok": False, "error": "missing_scope", "needed": needed,
                              "provided": "chat:write,im:history,im:read,files:read"})


class GraphEmulator:
    def __init__(self, version: str = "v26.0") -> None:
        self.version = version
        self.tokens: set[str] = set()
        self.sent: list[dict[str, Any]] = []
        #: the Authorization header of each accepted send, in order
        self.send_authorizations: list[str] = []
        #: token -> the professional account GET /me describes (Instagram API with Instagram Login)
        self.accounts: dict[str, dict[str, Any]] = {}
        #: Page token -> the Instagram account linked to its Page; account id -> its username
        self.page_tokens: dict[str, str] = {}
        #: token -> the webhook fields POST /me/subscribed_apps subscribed it to
        self.subscriptions: dict[str, list[str]] = {}
        self.usernames: dict[str, str] = {}
        self.script: list[Scripted] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        #: IGSID -> unix seconds of the customer's last message (the windows are enforced for these)
        self.last_message: dict[str, float] = {}
        #: sends refused for being outside their window, as sent
        self.refused: list[dict[str, Any]] = []
        self._sent = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(f"/{self.version}/me/messages", self.send)
        app.router.add_get(f"/{self.version}/me", self.me)
        app.router.add_post(f"/{self.version}/me/subscribed_apps", self.subscribe)
        app.router.add_get(f"/{self.version}/{{node}}", self.node)
        app.router.add_get("/cdn/{name}", self.cdn)
        return app

    def fail(self, status: int, code: int, message: str, *, subcode: int | None = None, **headers: str) -> None:
        error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Atest"}
        if subcode is not None:
            error["error_subcode"] = subcode
        self.script.append(Scripted(status, {"error": error}, headers))

    async def send(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return web.json_response({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException",
                                                "code": 190}}, status=401)
        if "access_token" in request.query:
            return web.json_response({"error": {"message": "token in URL", "code": 100}}, status=400)
        if self.script:
            s = self.script.pop(0)
            return web.json_response(s.body, status=s.status, headers=s.headers)
        body = await request.json()
        refusal = self._window_refusal(body)
        if refusal is not None:
            self.refused.append(body)
            return web.json_response({"error": {"message": refusal[1], "type": "OAuthException", "code": refusal[0],
                                                "error_subcode": 2018278 if refusal[0] == 10 else None,
                                                "fbtrace_id": "AtestWindow"}}, status=400)
        async with self._sent:
            self.send_authorizations.append(request.headers.get("Authorization", ""))
            self.sent.append(body)
            self._sent.notify_all()
        return web.json_response({"recipient_id": body["recipient"]["id"], "message_id": f"mid.out.{len(self.sent)}"})

    def customer_wrote(self, igsid: str, at: float) -> None:
        """The customer ``igsid`` sent a message at ``at`` (unix seconds): their windows run from it."""
        self.last_message[igsid] = max(at, self.last_message.get(igsid, 0.0))

    def _window_refusal(self, body: dict[str, Any]) -> tuple[int, str] | None:
        """Graph's answer to a send outside Meta's windows: 24 h after the customer's last message
        (``RESPONSE``, or no messaging type), 7 days for ``MESSAGE_TAG`` + ``HUMAN_AGENT``."""
        last = self.last_message.get(str((body.get("recipient") or {}).get("id")))
        if last is None:
            return None
        kind, tag = body.get("messaging_type", "RESPONSE"), body.get("tag")
        if kind == "MESSAGE_TAG" and tag != "HUMAN_AGENT":
            return 100, f"(#100) Param tag must be one of {{HUMAN_AGENT}}, not {tag!r}"
        allowed = 7 * 86400 if kind == "MESSAGE_TAG" else 24 * 3600
        if time.time() - last > allowed:
            return 10, "(#10) This message is sent outside of allowed window."
        return None

    def add_account(self, token: str, *, account_id: str, username: str) -> None:
        self.tokens.add(token)
        self.accounts[token] = {"user_id": account_id, "username": username, "id": f"27{account_id[-14:]}"}

    async def me(self, request: web.Request) -> web.StreamResponse:
        """``GET /{version}/me?fields=…`` with the token as ``Authorization: Bearer`` or ``access_token``;
        an unknown token gets Graph's OAuthException, code 190."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or request.query.get("access_token", "")
        account = self.accounts.get(token)
        if account is None:
            return web.json_response({"error": {"message": "Invalid OAuth access token - Cannot parse access token",
                                                "type": "OAuthException", "code": 190, "fbtrace_id": "AtestMe"}}, status=400)
        fields = [f for f in request.query.get("fields", "id").split(",") if f]
        return web.json_response({k: account[k] for k in fields if k in account} | {"id": account["id"]})

    async def node(self, request: web.Request) -> web.StreamResponse:
        """``GET /{version}/{ig-user-id}?fields=id,username``: readable with the account's own token or a
        token of the Page linked to it (`page_tokens`); anything else is Graph's error 100."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or request.query.get("access_token", "")
        node = request.match_info["node"]
        if token not in self.tokens:
            return web.json_response({"error": {"message": "Invalid OAuth access token - Cannot parse access token",
                                                "type": "OAuthException", "code": 190, "fbtrace_id": "AtestNode"}}, status=400)
        account = self.accounts.get(token) or {}
        if node in (account.get("user_id"), self.page_tokens.get(token)):
            return web.json_response({"id": node, "username": self.usernames.get(node, account.get("username", node))})
        return web.json_response({"error": {"message": f"Unsupported get request. Object with ID '{node}' does not exist, "
                                                       "cannot be loaded due to missing permissions, or does not support "
                                                       "this operation.", "type": "GraphMethodException", "code": 100,
                                            "error_subcode": 33, "fbtrace_id": "AtestNode"}}, status=400)

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        """``POST /{version}/me/subscribed_apps?subscribed_fields=…``: ``{"success": true}`` for a known token."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or request.query.get("access_token", "")
        if token not in self.tokens:
            return web.json_response({"error": {"message": "Invalid OAuth access token - Cannot parse access token",
                                                "type": "OAuthException", "code": 190, "fbtrace_id": "AtestSub"}}, status=400)
        self.subscriptions[token] = request.query.get("subscribed_fields", "").split(",")
        return web.json_response({"success": True})

    def add_page_token(self, token: str, *, page_id: str, page_name: str, account_id: str, username: str) -> None:
        """A Page token (Facebook Login): ``/me`` is the Page; it reads the Instagram account linked to it."""
        self.tokens.add(token)
        self.accounts[token] = {"id": page_id, "name": page_name}
        self.page_tokens[token] = account_id
        self.usernames[account_id] = username

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.files:
            return web.Response(status=404)
        body, content_type = self.files[name]
        return web.Response(body=body, content_type=content_type)

    async def wait_sent(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        async with self._sent:
            await asyncio.wait_for(self._sent.wait_for(lambda: len(self.sent) >= n), timeout)
        return list(self.sent)
