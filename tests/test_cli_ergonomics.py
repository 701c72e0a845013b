"""A CLI that forgives: --json before or after the command, help grouped by task with an example for
every command, ids typed as unique prefixes and shown whole, one-line errors (an id and a log file
for the unexpected ones, never a traceback), dead letters named by id with their tenant and file, a
replay that cannot help refused with what to do, and `ingest` leaving out dotfiles, checksum
manifests and --exclude globs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli import main
from cli.knowledge import _collect
from tests.test_cli import parley


@pytest.fixture(scope="module")
def acme_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory, migrated, with the tenant acme (made once; each test gets a copy)."""
    home = tmp_path_factory.mktemp("cli-template")
    assert parley(home, "migrate").returncode == 0
    assert parley(home, "tenants", "create", "acme").returncode == 0
    return home / "var"


@pytest.fixture
def acme(acme_template: Path, tmp_path: Path) -> Path:
    shutil.copytree(acme_template, tmp_path / "var")
    return tmp_path


def _one_line_error(result, *words: str) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_json_is_accepted_before_and_after_the_command(acme: Path) -> None:
    tmp_path = acme
    # When the same listing is asked for with --json before the command, after it, and after a sub-command
    before = parley(tmp_path, "--json", "tenants", "list")
    after = parley(tmp_path, "tenants", "list", "--json")
    group = parley(tmp_path, "tenants", "--json", "list")
    # Then each prints the same JSON
    assert before.returncode == after.returncode == group.returncode == 0, after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout) == json.loads(group.stdout)
    assert [t["name"] for t in json.loads(after.stdout)] == ["acme"]
    # And so does every other printing command
    made = json.loads(parley(tmp_path, "keys", "create", "--tenant", "acme", "--json").stdout)
    assert made["key"].startswith("pk_")
    assert {r["variable"] for r in json.loads(parley(tmp_path, "config", "--json").stdout)} >= {"PARLEY_DATA_DIR"}


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


def test_help_groups_commands_by_task_and_every_command_has_an_example() -> None:
    runner = CliRunner()
    # When the newcomer asks for help
    top = runner.invoke(main, ["--help"], terminal_width=100)
    assert top.exit_code == 0, top.output
    # Then the commands are grouped by task, in order, each with its whole summary and an example
    headings = [line for line in top.output.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[:2] == ["Usage: main [OPTIONS] COMMAND [ARGS]...", "Options:"] or headings[0] == "Options:"
    tasks = [h for h in headings if h in ("Set up:", "Knowledge:", "Channels:", "Operate:")]
    assert tasks == ["Set up:", "Knowledge:", "Channels:", "Operate:"]
    assert "Other:" not in headings, "every command belongs to a task"
    assert "e.g. parley ingest ./docs --tenant acme" in top.output and "e.g. parley migrate" in top.output
    assert "..." not in top.output.split("Set up:")[1], "summaries are whole, not cut"
    # And every command's own help ends with an example of it
    for path, command in _commands(main):
        shown = runner.invoke(main, [*path, "--help"], terminal_width=100)
        assert shown.exit_code == 0, (path, shown.output)
        assert "Example:" in shown.output and f"parley {path[0]}" in shown.output.split("Example:")[1], path
        assert "--json" in shown.output, path


def test_bad_input_is_one_line_and_unexpected_errors_get_an_id_and_a_log(acme: Path) -> None:
    tmp_path = acme
    # When a question is empty, blank or 100 KB long, an id is unknown, or an option is not a number
    _one_line_error(parley(tmp_path, "ask", "", "--tenant", "acme"))
    _one_line_error(parley(tmp_path, "ask", "   ", "--tenant", "acme"))
    _one_line_error(parley(tmp_path, "ask", "why? " * 20_000, "--tenant", "acme"), "4,000")
    _one_line_error(parley(tmp_path, "jobs", "show", "0a26b8", "--tenant", "acme"), "no such job: 0a26b8")
    _one_line_error(parley(tmp_path, "documents", "delete", "zz", "--tenant", "acme"), "no such document", "4 characters")
    _one_line_error(parley(tmp_path, "keys", "revoke", "   ", "--tenant", "acme"), "give the API key's id")
    # Then each is one line on stderr with exit code 1 (above); and a usage error is click's (exit 2)
    assert parley(tmp_path, "documents", "list", "--tenant", "acme", "--limit", "many").returncode == 2
    assert "-5 is not in the range" in parley(tmp_path, "documents", "list", "--tenant", "acme", "--limit", "-5").stderr
    # When something unexpected breaks (the database file is not a database)
    (tmp_path / "var" / "parley.db").write_bytes(b"this is not a database " * 100)
    broken = parley(tmp_path, "tenants", "list")
    # Then it is one line with an error id, and the traceback is in the log the line names, not on screen
    line = _one_line_error(broken, "unexpected error", "DatabaseError")
    eid = line.split("unexpected error ", 1)[1].split(":", 1)[0]
    log = tmp_path / "var" / "logs" / "cli-errors.log"
    assert str(log) in line and f"error {eid}" in log.read_text() and "Traceback" in log.read_text()
    # And with --debug the traceback is shown too
    assert "Traceback" in parley(tmp_path, "--debug", "tenants", "list").stderr


def test_ids_are_taken_as_unique_prefixes_and_shown_whole(acme: Path) -> None:
    tmp_path = acme
    key = json.loads(parley(tmp_path, "--json", "keys", "create", "--tenant", "acme", "--name", "ops").stdout)
    tenant_id = json.loads(parley(tmp_path, "--json", "tenants", "list").stdout)[0]["id"]
    # When a wide terminal lists the keys, the id is shown whole on one line
    listed = parley(tmp_path, "keys", "list", "--tenant", "acme", env={"COLUMNS": "200"})
    assert key["id"] in listed.stdout, listed.stdout
    # And a narrow one shows a unique prefix instead, never an id cut with an ellipsis
    narrow = parley(tmp_path, "keys", "list", "--tenant", "acme", env={"COLUMNS": "80"}).stdout
    assert key["id"][:8] in narrow and key["id"] not in narrow and "…" not in narrow.split(key["id"][:8])[1][:3], narrow
    assert "unique prefixes" in narrow
    # When a key is revoked and a tenant shown by the first characters of their ids
    revoked = parley(tmp_path, "keys", "revoke", key["id"][:6], "--tenant", tenant_id[:6])
    shown = parley(tmp_path, "--json", "tenants", "show", tenant_id[:8])
    # Then they are the ones meant
    assert revoked.returncode == 0 and key["id"] in revoked.stdout, revoked.stderr
    assert json.loads(shown.stdout)["api_keys"][0]["revoked"] is True


async def _dead_letters(tmp_path: Path) -> dict[str, int]:
    """A password-protected PDF that failed for good and a file whose parser crashed five times, recorded
    as the document worker records them, in the CLI's database."""
    from ingestion.documents.service import mark_failed
    from knowledge.service import submit_upload
    from parley.blobs import StoredBlob
    from parley.bus import Envelope, Failure, record_dead_letter
    from parley.db import create_engine, create_sessionmaker, unit_of_work
    from parley.settings import Settings
    from tenants.repository import TenantDirectory

    engine = create_engine(Settings(data_dir=tmp_path / "var"), "test")
    sessions = create_sessionmaker(engine)
    ids = {}
    try:
        async with unit_of_work(sessions, admin=True) as session:
            tenant_id = (await TenantDirectory(session).by_name("acme")).id
        for name, failure in (("locked.pdf", Failure("pdf_encrypted", "pdf_encrypted: PDF is password-protected", False)),
                              ("flaky.docx", Failure("parser_crashed", "parser_crashed: crashed", True).exhausted(5))):
            sha = hashlib.sha256(name.encode()).hexdigest()
            async with unit_of_work(sessions, tenant_id=tenant_id) as session:
                document = (await submit_upload(session, tenant_id=tenant_id, source="cli", filename=name,
                                                declared_mime=None, blob=StoredBlob(f"{tenant_id}/{sha}", sha, 10))).document
                envelope = Envelope.new("document.uploaded", tenant_id=tenant_id, payload={"document_id": document.id})
                await mark_failed(session, envelope, failure)
                row = await record_dead_letter(session, queue="documents", message_id=envelope.id,
                                               message_type=envelope.type, tenant_id=tenant_id, correlation_id=None,
                                               failure=failure, attempts=[{"attempt": 1}], body=envelope.to_bytes())
                ids[name] = row.id
    finally:
        await engine.dispose()
    return ids


def test_dead_letters_show_tenant_and_file_and_a_replay_that_cannot_help_is_refused(acme: Path) -> None:
    tmp_path = acme
    ids = asyncio.run(_dead_letters(tmp_path))
    # When the admin lists the dead letters
    rows = {r["id"]: r for r in json.loads(parley(tmp_path, "dlq", "list", "--json").stdout)}
    table = parley(tmp_path, "dlq", "list", env={"COLUMNS": "80"}).stdout
    # Then each names its tenant and file, and says whether a replay can help
    locked, flaky = rows[ids["locked.pdf"]], rows[ids["flaky.docx"]]
    assert (locked["tenant"], locked["file"], locked["replayable"]) == ("acme", "locked.pdf", False)
    assert "give the password" in locked["replay_note"]
    assert (flaky["tenant"], flaky["file"], flaky["replayable"]) == ("acme", "flaky.docx", True)
    assert "locked.pdf" in table and "acme" in table and "replay: no: give the password" in table
    assert "flaky.docx" in table and "replay: yes" in table  # whole, at 80 columns
    # When the PDF's dead letter is replayed by its id alone (no --queue), it is refused with what to do
    _one_line_error(parley(tmp_path, "dlq", "replay", str(ids["locked.pdf"])), "cannot replay", "give the password",
                    "--force")
    # And an unknown id, or no id at all, is an error too
    _one_line_error(parley(tmp_path, "dlq", "replay", "4242"), "no such dead letter: 4242")
    _one_line_error(parley(tmp_path, "dlq", "replay"), "or pass --all")
    # And nothing was replayed
    assert {r["status"] for r in json.loads(parley(tmp_path, "--json", "dlq", "list", "--all").stdout)} == {"dead"}


def test_ingest_leaves_out_dotfiles_checksum_manifests_and_excluded_globs(acme: Path) -> None:
    tmp_path = acme
    # Given a downloaded folder with its manifests, a .git folder, drafts and the documents
    kb = tmp_path / "kb"
    for name in ("faq.md", "guide/returns.md", "drafts/new.md", "notes.tmp", ".DS_Store", ".git/config", "SHA256SUMS",
                 "guide/returns.md.sha256", "MD5SUMS", "report.pdf.md5", "sha512sums"):
        (kb / name).parent.mkdir(parents=True, exist_ok=True)
        (kb / name).write_text("x")
    # When it is collected with two --exclude globs
    files, excluded = _collect((str(kb),), ("*.tmp", "drafts"))
    # Then only the documents are taken; everything else is reported as excluded
    assert sorted(p.relative_to(kb).as_posix() for p in files) == ["faq.md", "guide/returns.md"]
    assert len(excluded) == 9
    # And a file named explicitly is taken unless an --exclude matches it
    assert _collect((str(kb / "SHA256SUMS"),))[0] == [kb / "SHA256SUMS"]
    # When a folder holds nothing but excluded files, ingest says so in one line
    only = tmp_path / "only"
    only.mkdir()
    (only / ".DS_Store").write_text("x")
    (only / "SHA256SUMS").write_text("x")
    _one_line_error(parley(tmp_path, "ingest", str(only), "--tenant", "acme"), "nothing to ingest", "2 excluded")


def test_shortened_ids_stay_unique() -> None:
    from cli.app import shortest_unique_prefixes

    ids = ["0a26b8f3aa", "0a26b8f3ab", "ffffffff00", "12345678"]
    short = shortest_unique_prefixes(ids)
    assert short == {"0a26b8f3aa": "0a26b8f3aa", "0a26b8f3ab": "0a26b8f3ab", "ffffffff00": "ffffffff", "12345678": "12345678"}
    assert len(set(short.values())) == len(ids)
