"""Who may add documents: the tenant's per-channel policy (`tenants.uploaders`), in the database and
through `parley tenants uploaders`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parley.db import bind_admin
from parley.errors import InvalidInput
from tenants import service, uploaders


async def test_the_default_lets_the_channels_admins_and_the_listed_uploaders_in(db) -> None:  # type: ignore[no-untyped-def]
    async with db.sessions() as s:
        bind_admin(s)
        t = await service.create_tenant(s, name="acme")
        await s.commit()
    async with db.sessions() as s:
        # Given a tenant that changed nothing, and one listed uploader without the right to replace
        await uploaders.allow(s, tenant_id=t.id, channel="slack", user_id="U0LISTED", note="support lead")

        async def decide(user: str, admin: bool = False, channel: str = "slack") -> uploaders.UploadPermission:
            return await uploaders.decide(s, tenant_id=t.id, channel=channel, user_id=user, channel_admin=admin,
                                          admin_reason="workspace admin" if admin else "")

        # Then a workspace admin may add and replace, the listed uploader may add, a member may not
        assert await decide("U0ADMIN", admin=True) == uploaders.UploadPermission(True, True, "workspace admin")
        listed = await decide("U0LISTED")
        assert (listed.may_upload, listed.may_replace) == (True, False)
        member = await decide("U0MEMBER")
        assert not member.may_upload and "admins and owners" in member.reason
        # And the listing is per channel: the same id on Instagram is nobody in particular
        assert not (await decide("U0LISTED", channel="instagram")).may_upload


async def test_each_mode_decides(db) -> None:  # type: ignore[no-untyped-def]
    async with db.sessions() as s:
        bind_admin(s)
        t = await service.create_tenant(s, name="acme")
        await s.commit()
    async with db.sessions() as s:
        await uploaders.allow(s, tenant_id=t.id, channel="instagram", user_id="IG-LISTED", may_replace=True)

        async def verdict(user: str, admin: bool) -> tuple[bool, bool]:
            p = await uploaders.decide(s, tenant_id=t.id, channel="instagram", user_id=user, channel_admin=admin)
            return p.may_upload, p.may_replace

        # listed: only the list counts, the account's configured uploaders included
        await uploaders.set_mode(s, tenant_id=t.id, channel="instagram", mode="listed")
        assert [await verdict("IG-OWNER", True), await verdict("IG-LISTED", False), await verdict("IG-X", False)] == [
            (False, False), (True, True), (False, False)]
        # anyone: everyone may add; replacing someone else's document stays with admins and the listed
        await uploaders.set_mode(s, tenant_id=t.id, channel="instagram", mode="anyone")
        assert [await verdict("IG-OWNER", True), await verdict("IG-LISTED", False), await verdict("IG-X", False)] == [
            (True, True), (True, True), (True, False)]
        # nobody: closed, whoever asks
        await uploaders.set_mode(s, tenant_id=t.id, channel="instagram", mode=uploaders.UploadMode.nobody)
        assert [await verdict("IG-OWNER", True), await verdict("IG-LISTED", False)] == [(False, False), (False, False)]
        described = {c["channel"]: c for c in await uploaders.describe(s, tenant_id=t.id)}
        assert described["instagram"]["mode"] == "nobody" and described["slack"]["mode"] == "admins"
        assert [u["user_id"] for u in described["instagram"]["uploaders"]] == ["IG-LISTED"]


async def test_bad_settings_are_refused_and_one_tenants_list_is_not_anothers(db) -> None:  # type: ignore[no-untyped-def]
    async with db.sessions() as s:
        bind_admin(s)
        a = await service.create_tenant(s, name="acme")
        b = await service.create_tenant(s, name="other")
        await s.commit()
    async with db.sessions() as s:
        with pytest.raises(InvalidInput, match="unknown upload channel"):
            await uploaders.allow(s, tenant_id=a.id, channel="shopify", user_id="x")
        with pytest.raises(InvalidInput, match="unknown upload mode"):
            await uploaders.set_mode(s, tenant_id=a.id, channel="slack", mode="everyone")
        with pytest.raises(InvalidInput, match="needs the person's id"):
            await uploaders.allow(s, tenant_id=a.id, channel="slack", user_id="  ")
        # Listing twice updates the rights; removing says whether there was anything to remove
        await uploaders.allow(s, tenant_id=a.id, channel="slack", user_id="U1")
        row = await uploaders.allow(s, tenant_id=a.id, channel="slack", user_id="U1", may_replace=True)
        assert row.may_replace
        await s.commit()
    async with db.sessions() as s:
        other = await uploaders.decide(s, tenant_id=b.id, channel="slack", user_id="U1", channel_admin=False)
        assert not other.may_upload
    async with db.sessions() as s:
        assert await uploaders.disallow(s, tenant_id=a.id, channel="slack", user_id="U1") is True
        assert await uploaders.disallow(s, tenant_id=a.id, channel="slack", user_id="U1") is False
        assert not (await uploaders.decide(s, tenant_id=a.id, channel="slack", user_id="U1", channel_admin=False)).may_upload


def _parley(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATA_DIR=str(tmp_path / "var"), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)


def test_the_cli_changes_who_may_upload(tmp_path: Path) -> None:
    # Given a tenant on the embedded default
    assert _parley(tmp_path, "migrate").returncode == 0
    assert _parley(tmp_path, "tenants", "create", "acme").returncode == 0
    # When the operator lists a Slack uploader who may replace, and closes web uploads
    added = _parley(tmp_path, "tenants", "uploaders", "add", "slack", "U0LEAD", "--may-replace", "--note", "support lead",
                    "--tenant", "acme")
    assert added.returncode == 0, added.stderr
    assert _parley(tmp_path, "tenants", "uploaders", "mode", "web", "nobody", "--tenant", "acme").returncode == 0
    # Then the policy shows both, channel by channel
    shown = json.loads(_parley(tmp_path, "--json", "tenants", "uploaders", "show", "--tenant", "acme").stdout)
    by_channel = {c["channel"]: c for c in shown}
    assert by_channel["web"]["mode"] == "nobody" and by_channel["slack"]["mode"] == "admins"
    [lead] = by_channel["slack"]["uploaders"]
    assert (lead["user_id"], lead["may_replace"], lead["note"]) == ("U0LEAD", True, "support lead")
    assert lead["added_by"].startswith("cli")
    # And a bad channel or mode is a clear error
    bad = _parley(tmp_path, "tenants", "uploaders", "mode", "shopify", "anyone", "--tenant", "acme")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    # When the uploader is removed, the list is empty again (and removing twice says so)
    assert _parley(tmp_path, "tenants", "uploaders", "remove", "slack", "U0LEAD", "--tenant", "acme").returncode == 0
    again = _parley(tmp_path, "tenants", "uploaders", "remove", "slack", "U0LEAD", "--tenant", "acme")
    assert "was not listed" in again.stderr
    shown = json.loads(_parley(tmp_path, "--json", "tenants", "uploaders", "show", "--tenant", "acme").stdout)
    assert all(c["uploaders"] == [] for c in shown)
