"""Files appear whole or not at all: written beside their target, fsynced, renamed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO


def publish_files(out: Path, files: Mapping[str, bytes | Sequence[bytes | bytearray]],
                  retire: str | None = None) -> None:
    """Write every file (its bytes, or its parts in a row) beside its target and fsync it, then
    rename them all into place, in order. `retire` (a file that vouches for the others) is
    removed before the first rename."""
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            fd, temp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
            staged.append((Path(temp), out / name))
            with os.fdopen(fd, "wb") as f:
                f.writelines([data] if isinstance(data, bytes) else data)
                f.flush()
                os.fchmod(f.fileno(), 0o644)
                os.fsync(f.fileno())
        if retire:
            (out / retire).unlink(missing_ok=True)
        for tmp, target in staged:
            tmp.replace(target)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def write_file(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Stream a file through `write` into a temp file beside `target`, fsync it, rename it into
    place. On any error the temp file is removed and an existing `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        Path(temp).replace(target)
    finally:
        Path(temp).unlink(missing_ok=True)
