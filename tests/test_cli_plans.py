"""`parley plans`, `parley usage recount`, `parley status` and a CLI upload refused by the plan, on
the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from click.testing import CliRunner

from cli import main
from tests.support import services


def parley(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`parley ARGS` as the console script runs it, in this process (click's runner: one import of
    the whole CLI instead of one per command), on a data directory of the test's own."""
    env = {k: None for k in os.environ if k.startswith("PARLEY_")}
    env.update({"PARLEY_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200",
                "PARLEY_AMQP_PREFIX": f"tq{uuid.uuid4().hex[:8]}.", "PARLEY_ENV_FILE": "none"})
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(["parley", *args], result.exit_code, result.stdout, result.stderr)


def test_plans_bad_limits_an_ingest_past_the_plan_exits_3_and_status_shows_usage(tmp_path: Path) -> None:
    assert parley(tmp_path, "migrate").returncode == 0
    assert parley(tmp_path, "tenants", "create", "acme").returncode == 0
    # When bad limits are given, Then each is a clear error (and nothing changes: see the products below)
    negative = parley(tmp_path, "plans", "set", "--tenant", "acme", "--max-documents", "-1")
    absurd = parley(tmp_path, "plans", "set", "--tenant", "acme", "--max-products", "5", "--max-chunks", "99999999999999")
    assert negative.returncode == 1 and "cannot be negative" in negative.stderr and "Traceback" not in negative.stderr
    assert absurd.returncode == 1 and "beyond any real plan" in absurd.stderr
    # When the operator gives the tenant its own plan
    made = parley(tmp_path, "--json", "plans", "set", "--tenant", "acme", "--name", "starter", "--max-documents", "1",
                  "--max-stored-bytes", "2MB")
    assert made.returncode == 0, made.stderr
    report = json.loads(made.stdout)
    limits = {r["resource"]: (r["limit"], r["default"]) for r in report["resources"]}
    assert report["plan"] == "starter" and limits["documents"] == (1, False) and limits["stored_bytes"] == (2 * 1024**2, False)
    assert limits["products"][1] is True  # the refused command changed nothing
    # And two files are ingested past it
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nOne.\n")
    (docs / "b.md").write_text("# B\n\nTwo.\n")
    refused = parley(tmp_path, "ingest", str(docs), "--tenant", "acme", "--no-wait")
    # Then it exits 3 saying which limit, and nothing was stored (no document, no file)
    assert refused.returncode == 3, refused.stderr
    assert "This workspace's plan allows 1 documents; 0 are stored, and these 2 files would add 2" in refused.stderr
    assert not [p for p in (tmp_path / "var" / "blobs").rglob("*") if p.is_file()]
    recount = json.loads(parley(tmp_path, "--json", "usage", "recount", "--tenant", "acme").stdout)
    assert recount == [{"tenant": "acme", "drift": {}}]
    # And `parley status` shows usage against the limits
    if services.reachable("127.0.0.1", 5672):
        shown = parley(tmp_path, "status")
        assert shown.returncode == 0, shown.stderr
        assert "usage against plan limits" in shown.stdout and "0 / 1" in shown.stdout
