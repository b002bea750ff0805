"""Writing output files so that a failure never leaves half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from reconciler.errors import ReconcilerError


def write_atomically(path: Path, text: str) -> None:
    """Write all of ``text`` or nothing: a temporary file renamed into place.

    Devices and pipes (``/dev/stdout``, a FIFO) are written straight through,
    and a symbolic link is followed, so neither is replaced by a plain file.
    """
    target = path.resolve()
    try:
        if target.exists() and not target.is_file():
            if target.is_dir():
                raise ReconcilerError(f"cannot write {path}: it is a folder")
            with target.open("w", encoding="utf-8") as handle:
                handle.write(text)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as error:
        raise ReconcilerError(f"cannot write {path}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except OSError as error:
        raise ReconcilerError(f"cannot write {path}: {error.strerror}") from error
    finally:
        Path(temporary).unlink(missing_ok=True)
