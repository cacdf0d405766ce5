"""An input as the cache keeps it: its index, and its files' data, uncompressed, read back by
content one file at a time.

Inflating a base core or reading a squashfs is most of what a rebuild would cost, and holding
their data is most of a build's memory. So the first build that reads an input writes each of
its files' data into one file of the cache's derived data (`Writer`), and keeps the input's
index (`base_index`, `entry_index`): every entry without its data, with its `build.json` facts,
and where each content is in the data file (its sha256 -> offset and size, `Places`). Builds
compose from the indexes and read a file's data (`Store.read`) only where they need it: for a
run of the image not compressed before, or for a program the check has not read before.

A read is checked against the sha256 it asks for, so a damaged data file is `Damaged` (and the
build reads its inputs again) rather than a wrong image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from ..errors import StateError
from ..formats.manifest import describe
from ..formats.newc import Entry
from ..version import FORMAT
from .compose import BASE, Item, Tree, shared

Table = dict[str, tuple[int, int]]  # sha256 hex -> (offset, size) in one data file
EMPTY = hashlib.sha256(b"").hexdigest()


class Damaged(StateError):
    """Stored data is missing or not what its digest says: a build reads its inputs again (and
    fails with this line only when the data it has just written is damaged too)."""


class NotKept(Exception):
    """The cache could not take a data file (full, read-only): keep the data in memory."""


class Writer:
    """Appends contents to a data file, each once; `table` says where each is."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._size = 0
        self.table: Table = {}

    def add(self, data: bytes, digest: str) -> None:
        """Keep `data` (whose sha256 is `digest`) unless it is there already."""
        if not data or digest in self.table:
            return
        try:
            self._out.write(data)
        except OSError as e:
            raise NotKept(str(e)) from e
        self.table[digest] = (self._size, len(data))
        self._size += len(data)


class Store:
    """Contents by sha256, from the data files of several inputs (open while the store is)."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[int, int, int]] = {}
        self._files: dict[int, Path] = {}

    def add(self, path: Path, table: Mapping[str, Sequence[int]]) -> None:
        """Serve the contents `table` places in the data file at `path`.

        OSError: the file cannot be opened. ValueError: `table` is not a table of it.
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._files[fd] = path
        size = os.fstat(fd).st_size
        for digest, (offset, length) in table.items():
            if not (isinstance(offset, int) and isinstance(length, int)
                    and offset >= 0 and length > 0 and offset + length <= size):
                raise ValueError(f"{path}: no content at {offset}+{length}")
            self._where[digest] = (fd, offset, length)

    def read(self, digest: str) -> bytes:
        """The content whose sha256 is `digest` (thread-safe). Damaged: not there, or other
        bytes than the digest says."""
        if digest == EMPTY:
            return b""
        if digest not in self._where:
            raise Damaged(f"cache: no stored content {digest}")
        fd, offset, size = self._where[digest]
        try:
            data = os.pread(fd, size, offset)
        except OSError as e:
            raise Damaged(f"{self._files[fd]}: cannot read ({e.strerror})") from e
        if hashlib.sha256(data).hexdigest() != digest:
            raise Damaged(f"{self._files[fd]}: damaged at {offset} (content {digest})")
        return data

    def close(self) -> None:
        for fd in self._files:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files.clear()
        self._where.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


@contextlib.contextmanager
def writing(open_file: contextlib.AbstractContextManager[BinaryIO]) -> Iterator[Writer]:
    """A `Writer` into a file the cache commits when the block ends (`Cache.derived_writer`);
    NotKept when the cache cannot take it."""
    try:
        with open_file as out:
            yield Writer(out)
    except OSError as e:
        raise NotKept(str(e)) from e


# -- the indexes ----------------------------------------------------------------------------

INDEX_FORMAT = f"tcbuild-index-{FORMAT}"  # in every derived key (`incremental.derived_key`)
Places = Mapping[str, Sequence[int]]  # a `Table` as read back


def _row(entry: Entry, facts: Mapping[str, Any]) -> list[Any]:
    target = None
    if stat.S_ISLNK(entry.mode):
        target = (entry.data or b"").decode("utf-8", "surrogateescape")
    return [entry.name, entry.mode, entry.uid, entry.gid, entry.nlink, entry.mtime, entry.size,
            entry.ino, *entry.rdev, entry.segment, target, facts]


def _unrow(row: list[Any]) -> tuple[Entry, dict[str, Any]]:
    name, mode, uid, gid, nlink, mtime, size, ino, major, minor, segment, target, facts = row
    data = None if target is None else target.encode("utf-8", "surrogateescape")
    return Entry(name, mode, uid, gid, nlink, mtime, size, ino, (major, minor), data,
                 segment), facts


def base_index(tree: Tree, places: Places) -> bytes:
    """What a build needs of a base core read in full (`read_base`): every entry without its
    data, and where each content is in the core's data file."""
    rows = [[item.link_group[0] if item.link_group else 0,
             *_row(item.entry, item.facts or describe(shared(tree, item)))]
            for item in tree.items.values()]
    return json.dumps({"format": INDEX_FORMAT, "entries": rows, "users": tree.users,
                       "groups": tree.groups, "links": sorted(tree.base_links),
                       "data": places}).encode()


def _load_index(data: bytes) -> dict[str, Any]:
    index = json.loads(data)
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ValueError("not a tcbuild index of this format")
    return index


def read_base_index(data: bytes) -> tuple[Tree, Places]:
    """A base tree from `base_index`: entries without data (symlink targets kept), with facts;
    where their contents are.

    ValueError, KeyError or TypeError: not such an index.
    """
    index = _load_index(data)
    tree = Tree(users=index["users"], groups=index["groups"], base_links=set(index["links"]))
    for part, *row in index["entries"]:
        entry, facts = _unrow(row)
        group = None
        if stat.S_ISREG(entry.mode) and entry.nlink > 1:
            group = (part, entry.segment, entry.ino)
        tree.items[entry.name] = Item(entry, BASE, group, facts)
    return tree, index["data"]


def entry_index(entries: Iterable[tuple[Entry, Mapping[str, Any]]], places: Places) -> bytes:
    """Entries (an extension's) with their facts (`describe`), without their data, and where
    each content is in the extension's data file."""
    return json.dumps({"format": INDEX_FORMAT, "entries": [_row(e, facts) for e, facts in entries],
                       "data": places}).encode()


def read_entry_index(data: bytes) -> tuple[list[tuple[Entry, Mapping[str, Any]]], Places]:
    """The entries of `entry_index`, data None (symlink targets kept), with their facts; where
    their contents are.

    ValueError, KeyError or TypeError: not such an index.
    """
    index = _load_index(data)
    return [_unrow(row) for row in index["entries"]], index["data"]
