"""newc cpio, read the way the kernel reads an initramfs: every segment to the end, not the first.

libarchive, GNU cpio and bsdtar stop at the first `TRAILER!!!`; the kernel goes on through zero
padding into the next segment (Tiny Core's `corepure64.gz` is `rootfs64.gz` + `modules64.gz`).
"""

from __future__ import annotations

import gzip
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import ArchiveError

MAGICS = (b"070701", b"070702")  # newc, and newc with checksums ("crc")
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
GZIP_MAGIC = b"\x1f\x8b"
MAX_NAME = 4096


@dataclass(frozen=True, slots=True)
class Entry:
    """One cpio entry; `data` is None when the reader was asked to skip contents."""

    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    size: int
    ino: int
    rdev: tuple[int, int]
    data: bytes | None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def path(self) -> str:
        """The name without a leading `./` or `/`, as the kernel resolves it from the root."""
        name = self.name
        while name.startswith(("./", "/")):
            name = name[2:] if name.startswith("./") else name[1:]
        return "." if name in ("", ".") else name


def _align4(n: int) -> int:
    return (4 - n % 4) % 4


def read_entries(stream: BinaryIO, *, source: str, data: bool = True) -> Iterator[Entry]:
    """Yield every entry of every segment of an uncompressed cpio stream (trailers omitted)."""
    offset = 0

    def read(n: int, what: str) -> bytes:
        nonlocal offset
        chunk = stream.read(n)
        if len(chunk) != n:
            raise ArchiveError(f"{source}: truncated cpio at byte {offset + len(chunk)} "
                               f"(reading {what})")
        offset += n
        return chunk

    while True:
        first = stream.read(1)
        if not first:
            return
        start = offset
        offset += 1
        if first == b"\0":  # padding between segments
            continue
        header = first + read(HEADER_SIZE - 1, "a header")
        if header[:6] not in MAGICS:
            raise ArchiveError(f"{source}: bad cpio magic {header[:6]!r} at byte {start} "
                               "(not a newc archive)")
        try:
            fields = [int(header[i : i + 8], 16) for i in range(6, HEADER_SIZE, 8)]
        except ValueError:
            raise ArchiveError(f"{source}: malformed cpio header at byte {start}") from None
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmajor, rminor, namesize, _ = fields
        if not 0 < namesize <= MAX_NAME:
            raise ArchiveError(f"{source}: cpio name size {namesize} at byte {start}")
        raw = read(namesize, "a name")
        if raw[-1:] != b"\0":
            raise ArchiveError(f"{source}: cpio name without NUL at byte {start}")
        name = raw[:-1].decode("utf-8", "surrogateescape")
        read(_align4(HEADER_SIZE + namesize), "name padding")
        if name == TRAILER:
            continue
        if data:
            body: bytes | None = read(size, f"the data of {name}")
        else:
            body = None
            _skip(stream, size, source, name)
            offset += size
        read(_align4(size), "data padding")
        yield Entry(name, mode, uid, gid, nlink, mtime, size, ino, (rmajor, rminor), body)


def _skip(stream: BinaryIO, size: int, source: str, name: str) -> None:
    """Read past `size` bytes of data without keeping them."""
    left = size
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise ArchiveError(f"{source}: truncated cpio (the data of {name})")
        left -= len(chunk)


def open_initramfs(path: Path) -> BinaryIO:
    """Open an initramfs file as its uncompressed cpio stream (gzip members read to the end)."""
    f = path.open("rb")
    magic = f.peek(2)[:2] if hasattr(f, "peek") else b""
    if magic == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if magic == b"07":
        return f
    f.close()
    raise ArchiveError(f"{path}: not a gzip-compressed or plain cpio archive")


def iter_initramfs(path: Path, *, data: bool = True) -> Iterator[Entry]:
    """Every entry of an initramfs file, all segments, in archive order."""
    with open_initramfs(path) as stream:
        try:
            yield from read_entries(stream, source=str(path), data=data)
        except (OSError, EOFError, zlib.error) as e:
            raise ArchiveError(f"{path}: corrupt gzip data: {e}") from e
