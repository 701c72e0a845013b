"""What Parley writes stays with the user it runs as: a data directory it creates is 0700, the
SQLite file (and its WAL and shared-memory files), the secret key, the service token and the blobs
0600; and SQL parameters (DM and document text) never reach an error message."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from parley.blobs import BlobStore
from parley.crypto import load_secret_box, load_service_token
from parley.db import create_engine
from parley.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems run with (022): what Parley creates must be private whatever it is."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def test_a_fresh_data_directory_is_private_to_this_user(tmp_path: Path, usual_umask: None) -> None:
    # Given settings pointing at a data directory that does not exist yet (nor does its parent)
    settings = Settings(data_dir=tmp_path / "srv" / "var", log_json=False)
    data = settings.data_dir
    # When Parley opens its SQLite database and writes to it, makes its key and token, and stores a blob
    engine = create_engine(settings, "test")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE probe (v TEXT)"))
            await conn.execute(text("INSERT INTO probe VALUES ('a DM')"))
        async with engine.connect() as conn:  # the WAL and shm files exist while a connection is open
            assert (await conn.execute(text("SELECT count(*) FROM probe"))).scalar() == 1
            wal, shm = data / "parley.db-wal", data / "parley.db-shm"
            assert wal.exists() and shm.exists()
            wal_mode, shm_mode = mode(wal), mode(shm)
    finally:
        await engine.dispose()
    load_secret_box(settings)
    load_service_token(settings)
    blob = await BlobStore(settings.effective_blob_dir).put_bytes("acme", b"%PDF- a contract", max_bytes=1 << 20)
    # Then every directory it created is 0700 and every file 0600
    assert {p.name: oct(mode(p)) for p in (tmp_path / "srv", data, settings.effective_blob_dir)} == {
        "srv": "0o700", "var": "0o700", "blobs": "0o700"}
    files = {name: oct(mode(data / name)) for name in ("parley.db", "secret.key", "service.token")}
    assert files == {"parley.db": "0o600", "secret.key": "0o600", "service.token": "0o600"}
    assert (oct(wal_mode), oct(shm_mode)) == ("0o600", "0o600")
    assert oct(mode(settings.effective_blob_dir / blob.key)) == "0o600"


async def test_an_existing_directory_keeps_the_mode_its_owner_chose(tmp_path: Path, usual_umask: None) -> None:
    # Given a data directory an operator made group-readable on purpose
    data = tmp_path / "shared"
    data.mkdir(mode=0o750)
    os.chmod(data, 0o750)
    # When Parley opens its database there
    engine = create_engine(Settings(data_dir=data, log_json=False), "test")
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    await engine.dispose()
    # Then the directory is left as it was, and the new database file is private
    assert (oct(mode(data)), oct(mode(data / "parley.db"))) == ("0o750", "0o600")


async def test_sql_parameters_stay_out_of_database_errors(db_url: str, tmp_path: Path) -> None:
    # Given an engine as every Parley process builds it, and a row holding a customer's words
    engine = create_engine(Settings(database_url=db_url, data_dir=tmp_path / "var", log_json=False), "test")
    words = "my card number is 4111 1111 1111 1111"
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE TEMPORARY TABLE probe (v TEXT PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO probe VALUES (:v)"), {"v": words})
            # When the same row is written again and the database refuses it
            with pytest.raises(IntegrityError) as refused:
                await conn.execute(text("INSERT INTO probe VALUES (:v)"), {"v": words})
    finally:
        await engine.dispose()
    # Then the error (which is logged with its traceback) names the statement but not the words
    assert "INSERT INTO probe" in str(refused.value)
    assert words not in str(refused.value) and "4111" not in str(refused.value)
