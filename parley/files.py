"""Files and directories Parley creates are private to the user it runs as.

The data directory holds the SQLite database (every DM and document), the blobs, the secret key and
the service token: what Parley creates there is 0700 (directories) and 0600 (files), whatever the
umask. Paths that already exist are left as they are (an operator may have chosen their modes);
`parley doctor` warns about a key file other users can read.

Secret files are written whole before they appear under their name (a temporary file, then
``os.link``, which fails when the name exists): two processes starting at once (`parley up`)
never read a half-written file, and never end up with two different secrets.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """Make ``path`` a directory; each directory this call creates (``path`` and missing parents) is 0700."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.is_dir() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made by another process meanwhile (or a file: the caller's open will say so)
        os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def create_private_file(path: Path | str, data: bytes = b"") -> bool:
    """Create ``path`` holding ``data`` with mode 0600 unless it exists; True when this call made it.
    The file appears complete or not at all; its directory is made private when it is missing."""
    path = Path(path)
    if path.exists():
        return False
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
