"""newc cpio, read the way the kernel reads an initramfs: every segment to the end, not the first.

libarchive, GNU cpio and bsdtar stop at the first `TRAILER!!!`; the kernel goes on through zero
padding into the next segment (Tiny Core's `corepure64.gz` is `rootfs64.gz` + `modules64.gz`).
`NewcWriter` writes one segment, refusing what the kernel would drop or misread.
"""

from __future__ import annotations

import gzip
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

from ..errors import ArchiveError

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
    segment: int = 0  # which concatenated archive it came from (hard links end with one)

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
    segment = 0

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
            segment += 1
            continue
        if data:
            body: bytes | None = read(size, f"the data of {name}")
        else:
            body = None
            _skip(stream, size, source, name)
            offset += size
        read(_align4(size), "data padding")
        yield Entry(name, mode, uid, gid, nlink, mtime, size, ino, (rmajor, rminor), body, segment)


def _skip(stream: BinaryIO, size: int, source: str, name: str) -> None:
    """Read past `size` bytes of data without keeping them."""
    left = size
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise ArchiveError(f"{source}: truncated cpio (the data of {name})")
        left -= len(chunk)


def open_initramfs(path: Path, label: str | None = None) -> BinaryIO:
    """Open an initramfs file as its uncompressed cpio stream (gzip members read to the end)."""
    f = path.open("rb")
    magic = f.peek(2)[:2] if hasattr(f, "peek") else b""
    if magic == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if magic == b"07":
        return f
    f.close()
    raise ArchiveError(f"{label or path}: not a gzip-compressed or plain cpio archive")


def iter_initramfs(path: Path, *, data: bool = True, label: str | None = None
                   ) -> Iterator[Entry]:
    """Every entry of an initramfs file, all segments, in archive order.

    Errors name `label` (e.g. `corepure64.gz` for a file kept in the cache) or else the path.
    """
    source = label or str(path)
    with open_initramfs(path, source) as stream:
        try:
            yield from read_entries(stream, source=source, data=data)
        except (OSError, EOFError, zlib.error) as e:
            raise ArchiveError(f"{source}: corrupt gzip data: {e}") from e


# --- writing ---------------------------------------------------------------------------------

MAX_FIELD = 0xFFFFFFFF  # 8 hex digits
MAX_NAME_BYTES = MAX_NAME - 1  # the kernel's PATH_MAX counts the NUL
MAX_SYMLINK = MAX_NAME - 1  # symlink(2) refuses PATH_MAX bytes; the kernel skips longer ones
_NO_DATA_TYPES = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a fifo",
    stat.S_IFSOCK: "a socket",
}
# Header fields in archive order; devmajor/devminor and check are always 0 (written literally).
# Uppercase hex, as GNU `cpio -o -H newc` writes (the kernel and readers take either case).
_HEADER = b"070701%08X%08X%08X%08X%08X%08X%08X0000000000000000%08X%08X%08X00000000%s"
_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "rdev major", "rdev minor")


class _LinkGroup:
    """The names written so far for one source inode of a hard-link group."""

    __slots__ = ("first", "ino", "names", "data")

    def __init__(self, first: Entry, ino: int) -> None:
        self.first = first
        self.ino = ino
        self.names = 1
        self.data = first.data or None  # the group's contents, once a name has carried them


class NewcWriter:
    """Stream entries out as one newc cpio segment, checked the way the kernel will read them.

    Inode numbers: with `renumber` (the default) they are 1, 2, 3, ... in write order, so the
    bytes depend only on the entries' order and metadata, never on the source's inode numbers.
    Hard links: a non-directory, non-symlink entry with `nlink >= 2` belongs to the group of its
    source `ino`; every name of a group gets the group's one new number. `nlink` is written as
    given, so the caller passes the final link count (a pass-through of `read_entries` already
    does); the writer checks it: a group's names must agree on type, mode, owner, mtime and
    nlink, may not outnumber `nlink` (checked in `add`) nor fall short of it (checked in
    `close`, before the trailer), and names that carry data must carry the same bytes.
    The data stays on whichever name(s) carry it: GNU cpio puts it on the last name (earlier
    ones have size 0), bsdtar from an mtree spec on every name, and a `read_entries`
    pass-through keeps either layout. Any layout works: the kernel (init/initramfs.c
    `maybe_link`) makes each later name with the same ino and nlink >= 2 a link to the first and
    opens it without O_TRUNC, so a size-0 name leaves the data alone and a name with data writes
    it into the shared inode. GNU `cpio -i` and bsdtar extract every layout as one inode.
    Groups end with the segment: the kernel forgets them at `TRAILER!!!`.

    `out` is not closed by the writer. `close()` writes the trailer, then, if `pad_to` > 0,
    zeros up to a multiple of `pad_to` bytes (GNU cpio pads to 512; the kernel needs none).
    """

    def __init__(self, out: BinaryIO, *, renumber: bool = True, pad_to: int = 0,
                 target: str = "cpio") -> None:
        if pad_to < 0:
            raise ValueError(f"pad_to must be >= 0, not {pad_to}")
        self._out = out
        self._renumber = renumber
        self._pad_to = pad_to
        self._target = target
        self._next_ino = 1
        self._groups: dict[int, _LinkGroup] = {}
        self._written = 0
        self._closed = False

    @property
    def written(self) -> int:
        """Bytes written to `out` so far (an entry boundary between calls)."""
        return self._written

    def __enter__(self) -> NewcWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()

    def add(self, entry: Entry) -> None:
        """Write one entry: header, name, data, each padded to 4 bytes."""
        if self._closed:
            raise ValueError("NewcWriter.add() after close()")
        name = self._name_bytes(entry.name)
        self._check_fields(entry)
        data = self._data(entry)
        ino = self._inode(entry)  # the only step that changes state: after every check
        header = _HEADER % (ino, entry.mode, entry.uid, entry.gid, entry.nlink, entry.mtime,
                            len(data), *entry.rdev, len(name) + 1,
                            name + _name_padding(len(name)))
        out = self._out
        out.write(header)
        size = len(data)
        if size:
            out.write(data)
            pad = -size % 4
            if pad:
                out.write(b"\0" * pad)
            size += pad
        self._written += len(header) + size

    def close(self) -> None:
        """Check the hard-link groups, write `TRAILER!!!` and the optional padding (idempotent)."""
        if self._closed:
            return
        for group in self._groups.values():
            if group.names != group.first.nlink:
                self._fail(group.first.name, f"hard link group (source ino {group.first.ino}) "
                           f"has nlink {group.first.nlink} but {group.names} name(s) were written")
        trailer = _HEADER % (0, 0, 0, 0, 1, 0, 0, 0, 0, len(TRAILER) + 1,
                             TRAILER.encode() + _name_padding(len(TRAILER)))
        self._out.write(trailer)
        self._written += len(trailer)
        if self._pad_to:
            pad = -self._written % self._pad_to
            self._out.write(b"\0" * pad)
            self._written += pad
        self._closed = True

    def _fail(self, name: str, problem: str) -> NoReturn:
        raise ArchiveError(f"{self._target}: entry {name!r}: {problem}")

    def _name_bytes(self, name: str) -> bytes:
        """The name as archive bytes (without its NUL), or an ArchiveError."""
        if not name:
            self._fail(name, "empty name")
        if "\0" in name:
            self._fail(name, "name contains a NUL byte")
        if name.startswith("/"):
            self._fail(name, "absolute name (the kernel resolves names from the root; use "
                       "a relative name)")
        if ".." in name.split("/"):
            self._fail(name, "name has a '..' component")
        if name == TRAILER:
            self._fail(name, f"{TRAILER} is the end-of-archive marker, not a name")
        raw = name.encode("utf-8", "surrogateescape")
        if len(raw) > MAX_NAME_BYTES:
            self._fail(name[:60] + "...", f"name is {len(raw)} bytes, longer than "
                       f"{MAX_NAME_BYTES}")
        return raw

    def _data(self, entry: Entry) -> bytes:
        """The bytes to store for `entry`, after checking they suit its type."""
        kind = stat.S_IFMT(entry.mode)
        data = entry.data
        if kind == stat.S_IFREG or kind == stat.S_IFLNK:
            what = "regular file" if kind == stat.S_IFREG else "symlink (its target)"
            if data is None:
                self._fail(entry.name, f"no data for a {what}")
            if entry.size != len(data):
                self._fail(entry.name, f"size {entry.size} but {len(data)} bytes of data")
            if kind == stat.S_IFLNK:
                if not data:
                    self._fail(entry.name, "symlink with an empty target")
                if b"\0" in data:
                    self._fail(entry.name, "symlink target contains a NUL byte")
                if len(data) > MAX_SYMLINK:
                    self._fail(entry.name, f"symlink target is {len(data)} bytes, longer than "
                               f"{MAX_SYMLINK}")
            return data
        if kind not in _NO_DATA_TYPES:
            self._fail(entry.name, f"unknown file type in mode {entry.mode:#o}")
        if data or entry.size:
            size = len(data) if data else entry.size
            self._fail(entry.name, f"{size} bytes of data given for {_NO_DATA_TYPES[kind]} "
                       "(must be none)")
        return b""

    def _inode(self, entry: Entry) -> int:
        """The inode number to write; hard-link groups share one (see the class docstring)."""
        kind = stat.S_IFMT(entry.mode)
        if entry.nlink < 2 or kind == stat.S_IFDIR or kind == stat.S_IFLNK:
            return self._number(entry.ino)
        group = self._groups.get(entry.ino)
        if group is None:
            self._groups[entry.ino] = _LinkGroup(entry, self._number(entry.ino))
            return self._groups[entry.ino].ino
        first = group.first
        for field in ("mode", "uid", "gid", "mtime", "nlink"):
            if getattr(entry, field) != getattr(first, field):
                self._fail(entry.name, f"hard link of {first.name!r} (source ino {entry.ino}) "
                           f"with a different {field} ({getattr(entry, field)} vs "
                           f"{getattr(first, field)})")
        if group.names >= entry.nlink:
            self._fail(entry.name, f"hard link group of {first.name!r} (source ino {entry.ino}) "
                       f"has more names than its nlink {entry.nlink}")
        if entry.data:
            if group.data is None:
                group.data = entry.data
            elif entry.data != group.data:
                self._fail(entry.name, f"hard link of {first.name!r} (source ino {entry.ino}) "
                           "with different data from an earlier name of the group")
        group.names += 1
        return group.ino

    def _number(self, ino: int) -> int:
        if not self._renumber:
            return ino
        number = self._next_ino
        self._next_ino += 1
        return number

    def _check_fields(self, entry: Entry) -> None:
        """Every header field must fit 8 hex digits (the renumbered inode always does)."""
        major, minor = entry.rdev
        ino = 0 if self._renumber else entry.ino
        size = len(entry.data) if entry.data else 0
        values = (ino, entry.mode, entry.uid, entry.gid, entry.nlink, entry.mtime, size,
                  major, minor)
        if max(values) > MAX_FIELD or min(values) < 0:
            for field, value in zip(_FIELDS, values, strict=True):
                if not 0 <= value <= MAX_FIELD:
                    self._fail(entry.name, f"{field} {value} does not fit a newc field "
                               "(8 hex digits, 0 to 0xFFFFFFFF)")


def _name_padding(length: int) -> bytes:
    """The NUL after a name of `length` bytes plus the zeros that end header + name on 4 bytes."""
    return b"\0" * (1 + -(HEADER_SIZE + length + 1) % 4)
