"""Writing a file so that a crash or power cut leaves the old contents or the new, never a torn mix.

Checkpoints, published weight snapshots and the learner's small JSON sidecars all go through
`write_atomically`; the episode store uses `fsync_dir` for its own (directory-level) renames.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable across power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path.

    A temp file in the same directory (so the rename stays on one filesystem and is atomic), fsynced
    before the rename, and the directory fsynced after it: a reader polling `path` sees the old file or
    the new one, never a torn file, even across a power cut. No temp file is left behind on failure
    (disk full, interrupt).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path
