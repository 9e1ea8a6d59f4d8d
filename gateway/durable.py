"""Files written so that a crash leaves either nothing or the whole file, never a part.

The data goes to a temporary name in the same directory, is fsynced, then takes its final
name in one step (rename, or link when an existing file must never be replaced), and the
directory entry is fsynced too.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory", "write_durably"]


def write_durably(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write `data` to `path` atomically and durably.

    Raises:
        FileExistsError: `overwrite` is false and `path` exists.
        OSError: the directory or file cannot be written.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(partial, path)
        else:
            os.link(partial, path)  # fails if the name exists: nothing is ever replaced
    finally:
        partial.unlink(missing_ok=True)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a new or renamed file) durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
