"""Log files read from their end: only the tail since a node's last boot matters.

A plain file is read backwards in blocks (`BLOCK` bytes at a time from its end), so a node's
view costs the lines since its last boot, not the months before; a compressed rotation cannot
be read backwards, so its lines are read forwards once and handed over last first. Each line
comes with its byte offset (plain) or its number (compressed): its place in the file, for
ordering lines of one file. A line is one `\\n`-ended piece (a `\\r` before it stays, a
final piece without a newline is a line too), as iterating over the file gives them; `keep`
picks the lines worth decoding (a cheap test on the raw bytes). A read error ends the lines
with a warning, as `view` does for forward reading.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("tcbuild")

BLOCK = 64 * 1024
OPENERS: dict[str, Any] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def backwards(path: Path, keep: Callable[[bytes], bool], block: int = BLOCK,
              end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """The file's lines that `keep` accepts, last first, each with its place in the file;
    `end`: a plain file's lines before that offset only."""
    if path.suffix in OPENERS:
        yield from reversed(_forwards(path, keep))
        return
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            yield from _blocks_backwards(f, size if end is None else min(end, size), keep,
                                         block)
    except READ_ERRORS as e:
        log.warning("%s: unreadable, the rest skipped (%s)", path,
                    getattr(e, "strerror", None) or e)


def last_line_end(path: Path, block: int = BLOCK) -> int:
    """The offset just past a plain file's last newline (0 without one); 0 when unreadable."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, 2)
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                found = f.read(end - start).rfind(b"\n")
                if found >= 0:
                    return start + found + 1
                end = start
    except OSError:
        pass
    return 0


def _blocks_backwards(f: IO[bytes], size: int, keep: Callable[[bytes], bool], block: int
                      ) -> Iterator[tuple[int, bytes]]:
    end, buf = size, b""
    stop = -1  # where the unread part of `buf` ends; -1 before the first block
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        buf = f.read(end - start) + (buf[:stop] if stop >= 0 else b"")
        end = start
        # a final newline ends the last line, it starts no empty one
        stop = len(buf) - (stop < 0 and buf.endswith(b"\n"))
        while (newline := buf.rfind(b"\n", 0, stop)) >= 0:
            raw = buf[newline + 1:stop]
            if keep(raw):
                yield start + newline + 1, raw
            stop = newline
        if start == 0 and keep(buf[:stop]):  # the first line, empty or not
            yield 0, buf[:stop]


def _forwards(path: Path, keep: Callable[[bytes], bool]) -> list[tuple[int, bytes]]:
    """A compressed file's kept lines, first first; what was read before an error counts."""
    kept: list[tuple[int, bytes]] = []
    number = 0
    try:
        f: IO[bytes]
        with OPENERS[path.suffix](path, "rb") as f:
            for raw in f:
                number += 1
                if keep(raw):
                    kept.append((number, raw.rstrip(b"\n")))
    except READ_ERRORS as e:
        log.warning("%s: unreadable after line %d, the rest skipped (%s)", path, number,
                    getattr(e, "strerror", None) or e)
    return kept
