"""The inputs' file data, kept uncompressed in the cache: read from an input once, then one file
at a time, by content.

Inflating a base core or reading a squashfs is most of what a rebuild would cost, and holding
their data is most of a build's memory. So the first build that reads an input writes each of
its files' data into one file of the cache's derived data (`Writer`), beside the input's index
(`image.base_index`, `image.entry_index`), which records where each content is: its sha256 ->
offset and size (`Table`). Builds compose from the indexes, entries without their data, and read
a file's data (`Store.read`) only where they need it: for a run of the image not compressed
before, or for a program the check has not read before.

A read is checked against the sha256 it asks for, so a damaged data file is `Damaged` (and the
build reads its inputs again) rather than a wrong image.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

Table = dict[str, tuple[int, int]]  # sha256 hex -> (offset, size) in one data file
EMPTY = hashlib.sha256(b"").hexdigest()


class Damaged(Exception):
    """Stored data is missing or not what its digest says: read the inputs again."""


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
        self._files: list[int] = []

    def add(self, path: Path, table: Mapping[str, Sequence[int]]) -> None:
        """Serve the contents `table` places in the data file at `path`.

        OSError: the file cannot be opened. ValueError: `table` is not a table of it.
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._files.append(fd)
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
        try:
            fd, offset, size = self._where[digest]
            data = os.pread(fd, size, offset)
        except (KeyError, OSError) as e:
            raise Damaged(f"no stored content {digest[:12]} ({e})") from e
        if hashlib.sha256(data).hexdigest() != digest:
            raise Damaged(f"stored content {digest[:12]} is damaged")
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
