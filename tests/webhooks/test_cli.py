"""`parley webhooks …` as an admin runs it (in-process: the real commands, the embedded default):
add with URL checks and the secret shown once, list, rotate, test, the delivery log, disable,
enable, remove, and clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from cli import main
from parley.webhook_signing import new_secret


def _cli(data_dir: Path, *args: str, **env: str) -> Result:
    # RabbitMQ unreachable on purpose: what a command queues stays in the outbox (never the real broker's queues)
    return CliRunner().invoke(main, list(args), env={"PARLEY_DATA_DIR": str(data_dir), "COLUMNS": "200",
                                                     "PARLEY_ENV_FILE": "none", "PARLEY_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
                                                     **env})


def test_the_webhooks_commands(tmp_path: Path) -> None:
    data = tmp_path / "var"
    assert _cli(data, "migrate").exit_code == 0
    assert _cli(data, "tenants", "create", "acme").exit_code == 0
    # A local receiver is refused without the development flag, with the reason, in one line
    refused = _cli(data, "webhooks", "add", "--tenant", "acme", "https://localhost:9000/hook", "--events", "all")
    assert refused.exit_code == 1 and "is a loopback address" in refused.output and len(refused.output.strip().splitlines()) == 1
    bad_event = _cli(data, "webhooks", "add", "--tenant", "acme", "https://93.184.215.14/h", "--events", "document.indexd")
    assert bad_event.exit_code == 1 and "unknown event type document.indexd" in bad_event.output
    # With the flag it is added, and its secret shown once
    added = _cli(data, "webhooks", "add", "--tenant", "acme", "http://127.0.0.1:9000/hook", "--events",
                 "document.indexed,job.completed", PARLEY_WEBHOOKS_ALLOW_PRIVATE="true")
    assert added.exit_code == 0, added.output
    secret = added.output.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and len(secret) == len(new_secret())
    listed = json.loads(_cli(data, "webhooks", "list", "--tenant", "acme", "--json").output)
    [endpoint] = listed
    assert (endpoint["events"], endpoint["status"]) == ("document.indexed,job.completed", "enabled")
    assert secret not in json.dumps(listed)
    ref = endpoint["id"][:6]
    # Rotation shows a new secret and how long the old one still signs
    rotated = _cli(data, "webhooks", "rotate-secret", ref, "--tenant", "acme", "--overlap-hours", "2")
    assert rotated.exit_code == 0 and "the previous secret signs too until" in rotated.output
    assert secret not in rotated.output
    # A test delivery is queued (the outbox keeps it: no platform runs) and shows in the log
    tested = _cli(data, "webhooks", "test", ref, "--tenant", "acme")
    assert tested.exit_code == 0 and "queued test delivery msg_" in tested.output, tested.output
    [delivery] = json.loads(_cli(data, "webhooks", "deliveries", ref, "--tenant", "acme", "--json").output)
    assert (delivery["type"], delivery["status"], delivery["attempts"]) == ("webhook.test", "pending", 0)
    # Disable, enable, remove
    assert "disabled" in _cli(data, "webhooks", "disable", ref, "--tenant", "acme").output
    assert json.loads(_cli(data, "webhooks", "enable", ref, "--tenant", "acme", "--json").output)["status"] == "enabled"
    assert "removed webhook endpoint" in _cli(data, "webhooks", "remove", ref, "--tenant", "acme").output
    gone = _cli(data, "webhooks", "deliveries", ref, "--tenant", "acme")
    assert gone.exit_code == 1 and "no such webhook endpoint" in gone.output
    # And every command explains itself
    helped = _cli(data, "webhooks", "add", "--help")
    assert helped.exit_code == 0 and "public addresses" in helped.output and "Example:" in helped.output


def test_doctor_warns_while_private_webhook_addresses_are_allowed() -> None:
    from cli.doctor import check_webhooks
    from parley.settings import Settings

    # Given the defaults / Then webhooks go to public https only
    ok = check_webhooks(Settings(_env_file=None))
    assert (ok.status, ok.detail.split(";")[0]) == ("ok", "https to public addresses only")
    # Given the development flag / Then doctor warns, saying what to do
    warned = check_webhooks(Settings(_env_file=None, webhooks_allow_private=True))
    assert warned.status == "warn" and "PARLEY_WEBHOOKS_ALLOW_PRIVATE is on" in warned.detail
    assert "unset PARLEY_WEBHOOKS_ALLOW_PRIVATE" in warned.fix
