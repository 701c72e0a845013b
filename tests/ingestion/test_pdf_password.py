"""A password-protected PDF opened with the password a person gave: in the parser, through the fork
server, and through a new interpreter, which gets the password outside its command line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from ingestion.documents.errors import DocumentUnreadable
from ingestion.documents.extract import extract
from ingestion.documents.sandbox import extract_document, extract_document_sync
from ingestion.documents.service import PASSWORD_MAX_AGE_S, IndexingDeps, open_password
from parley.bus import Permanent
from parley.crypto import SecretBox
from tests.ingestion.samples import build_pdf, encrypt_pdf, no_fork_server_plugin

PASSWORD = "Lx-7-parcel-Pw"
LOCKED = encrypt_pdf(build_pdf([["Parcels leave the warehouse every weekday at noon."]]), user_password=PASSWORD)


def test_the_parser_opens_a_protected_pdf_with_its_password() -> None:
    # Given a PDF that needs a password to be read
    # When it is extracted with its password, then its text comes out
    assert "every weekday at noon" in extract(LOCKED, filename="parcels.pdf", password=PASSWORD).text
    # And without one, or with a wrong one, it is refused with a reason that tells the two apart
    with pytest.raises(DocumentUnreadable) as none:
        extract(LOCKED, filename="parcels.pdf")
    with pytest.raises(DocumentUnreadable) as wrong:
        extract(LOCKED, filename="parcels.pdf", password="guess")
    assert (none.value.code, none.value.message) == ("pdf_encrypted", "PDF is password-protected")
    assert wrong.value.code == "pdf_encrypted" and "the password given does not open it" in wrong.value.message
    # And a password changes nothing for a document that has none
    assert extract(b"Plain words.", filename="a.txt", password=PASSWORD).text == "Plain words."


async def test_the_sandbox_passes_the_password_to_its_fork_server_child() -> None:
    doc = await extract_document(LOCKED, filename="parcels.pdf", password=PASSWORD, time_limit_s=20)
    assert "every weekday at noon" in doc.text
    with pytest.raises(DocumentUnreadable):
        await extract_document(LOCKED, filename="parcels.pdf", time_limit_s=20)


async def test_a_new_interpreter_gets_the_password_outside_its_command_line(tmp_path: Path) -> None:
    # Given a plugin that keeps fork servers from starting (so each call is a new interpreter) and
    # shows the child's own command line
    plugin = no_fork_server_plugin(
        tmp_path / "no_fork_server_show_argv.py",
        "def argv(data):\n"
        "    cmdline = open('/proc/self/cmdline', 'rb').read().replace(b'\\0', b' ').decode()\n"
        "    return [Block('paragraph', 'pid ' + str(os.getppid()) + ' ' + cmdline)]\n"
        "register_format('application/x-test-argv', magic=b'%TEST-ARGV', extract=argv)\n"
    )
    # When the protected PDF is extracted there with its password, then its text comes out
    doc = await extract_document(LOCKED, filename="parcels.pdf", password=PASSWORD, plugins=[plugin])
    assert "every weekday at noon" in doc.text
    assert "every weekday at noon" in extract_document_sync(LOCKED, filename="p.pdf", password=PASSWORD, plugins=[plugin]).text
    # And the child's command line (readable by anyone on the host) never holds the password
    shown = (await extract_document(b"%TEST-ARGV", password=PASSWORD, plugins=[plugin])).text
    assert "sandbox.child import main" in shown and PASSWORD not in shown


def test_a_sealed_password_opens_for_a_week_and_only_with_the_platforms_key() -> None:
    # Given the platform's key, and the worker's dependencies holding it
    key = Fernet.generate_key()
    box = SecretBox(key)
    deps = IndexingDeps(sessions=None, blobs=None, embedder=None, index=None, box=box)  # type: ignore[arg-type]
    # Then a password sealed now opens; no password is no password
    assert open_password(deps, box.encrypt(PASSWORD)) == PASSWORD
    assert open_password(deps, None) is None
    # And one sealed more than a week ago (an old dead letter replayed) fails for good, asking for it again
    old = Fernet(key).encrypt_at_time(PASSWORD.encode(), int(time.time()) - PASSWORD_MAX_AGE_S - 3600).decode()
    with pytest.raises(Permanent) as expired:
        open_password(deps, old)
    assert expired.value.code == "password_expired" and "give it again" in expired.value.message
    # And one sealed under another key cannot be read, and says so
    with pytest.raises(Permanent) as foreign:
        open_password(deps, SecretBox(Fernet.generate_key()).encrypt(PASSWORD))
    assert foreign.value.code == "password_unreadable"
