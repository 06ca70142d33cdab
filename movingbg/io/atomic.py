"""Temporary files that become their destination atomically (``os.replace``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["temp_beside", "FILE_MODE"]

FILE_MODE = 0o644
"""Mode of finished files: ``mkstemp`` makes them private (0600), which hides a user's outputs from
the web server or the other accounts that ``open()``'s usual 0644 would let read them."""


def temp_beside(dest: Path, prefix: str, suffix: str) -> str:
    """A new, closed temporary file in ``dest``'s folder with mode :data:`FILE_MODE` (the folder is
    created); the caller writes it and ``os.replace``-s it onto ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    return tmp
