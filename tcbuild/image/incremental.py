"""What builds keep in the cache and take back from it, so that a rebuild does only what changed.

- A base core or an extension is read once: its index and its files' data (`store.py`) are
  kept, and builds compose from them (`base`, `extension`), loading a file's data only where
  they need it.
- Each run of the image (`runs.py`) is compressed once: its gzip member is kept under the digest
  of its entries (names, metadata, contents' sha256) and the settings (`members`).
Everything is named by all it depends on (`derived_key`); a cache that cannot take something
only makes the next build slower.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from ..formats import tcz
from ..formats.compress import Compression, gzip_member, in_order
from ..formats.manifest import describe
from ..formats.newc import Entry, iter_initramfs
from ..sources.cache import Cache
from ..sources.inputs import Input, Inputs
from ..version import __version__
from . import compose, runs, store

log = logging.getLogger("tcbuild")


def derived_key(kind: str, *facts: str) -> str:
    """The cache name of data derived from inputs: everything it depends on, hashed."""
    text = json.dumps([kind, store.INDEX_FORMAT, __version__, *facts])
    return hashlib.sha256(text.encode()).hexdigest()


def keep(cache: Cache, key: str, parts: Iterable[bytes | bytearray]) -> None:
    """Keep derived data; a cache that cannot take it only makes the next build slower."""
    try:
        cache.store_derived(key, parts)
    except OSError as e:
        log.debug("cache: cannot keep derived data: %s", e)


T = TypeVar("T")


def _indexed(cache: Cache, contents: store.Store, key: str, fresh: bool,
             parse: Callable[[bytes], tuple[T, store.Places]],
             read: Callable[[compose.Keep | None], T],
             index: Callable[[T, store.Places], bytes]) -> T:
    """An input's entries: from its index (`parse`) with its data file in `contents`; else `read`
    (its data kept in a new data file, indexed); else, when the cache cannot take the data,
    read with the data in memory."""
    data_key = derived_key("data", key)
    if not fresh:
        kept, path = cache.derived(key), cache.derived_file(data_key)
        if kept is not None and path is not None:
            try:
                value, places = parse(kept)
                contents.add(path, places)
                return value
            except (ValueError, KeyError, TypeError, OSError):
                pass  # not an index this tcbuild reads, or its data file is gone: read again
    try:
        with store.writing(cache.derived_writer(data_key)) as writer:
            value = read(writer.add)
        path = cache.derived_file(data_key)
        if path is None:
            raise store.NotKept("its data file is gone")
        contents.add(path, writer.table)
    except store.NotKept as e:
        log.debug("cache: cannot keep an input's data: %s", e)
        return read(None)
    keep(cache, key, [index(value, writer.table)])
    return value


def base(inputs: Inputs, cache: Cache, contents: store.Store, fresh: bool) -> compose.Tree:
    """The base core, from its index and data file (see `_indexed`)."""
    def read(keep: compose.Keep | None) -> compose.Tree:
        return compose.read_base((iter_initramfs(part.path, label=part.name)
                                for part in inputs.core), keep)

    return _indexed(cache, contents, derived_key("base", *(part.sha256 for part in inputs.core)),
                    fresh, store.read_base_index, read, store.base_index)


def extension(ext: Input, cache: Cache, contents: store.Store, fresh: bool
               ) -> list[tuple[Entry, Mapping[str, Any]]]:
    """An extension's entries with their facts, from its index and data file (see
    `_indexed`)."""
    def read(keep: compose.Keep | None) -> list[tuple[Entry, Mapping[str, Any]]]:
        entries: list[tuple[Entry, Mapping[str, Any]]] = []
        for entry in tcz.read_tcz(ext.path, ext.label):
            facts = describe(entry)
            if keep is not None and stat.S_ISREG(entry.mode):
                keep(entry.data or b"", facts["sha256"])
                entry = replace(entry, data=None)
            entries.append((entry, facts))
        return entries

    return _indexed(cache, contents, derived_key("tcz", ext.sha256), fresh,
                    store.read_entry_index, read, store.entry_index)


def _member_key(items: list[compose.Item], compression: Compression) -> str:
    """A run's cache name from its entries (their facts, data not needed)."""
    rows = []
    for item in items:
        e = item.entry
        linked = stat.S_ISREG(e.mode) and e.nlink > 1
        rows.append([e.name, e.mode, e.uid, e.gid, e.nlink, e.mtime, e.size, *e.rdev,
                     e.ino if linked else 0, runs.content_digest(item)])
    import deflate  # loaded where used: `import tcbuild` stays light

    digest = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()
    return derived_key("member", compression.value, str(compression.level), deflate.__version__,
                       digest)


def members(tree: compose.Tree, cut: list[list[compose.Item]], compression: Compression,
            cache: Cache, jobs: int) -> Iterator[tuple[bytes | bytearray, bool]]:
    """The gzip members of the runs (`cut`) in order, and whether each was compressed now:
    from the cache under its entries' name (`_member_key`) when kept there intact, else made
    (the data its files need loaded then) and compressed on `jobs` threads, and kept."""
    def member(run: list[compose.Item]) -> tuple[bytes | bytearray, bool]:
        key = _member_key(run, compression)
        cached = cache.derived(key)
        if cached is not None:
            return cached, False
        archive = runs.archive(compose.with_data(tree, item) for item in run)
        compressed = gzip_member(archive, compression)
        keep(cache, key, [compressed])
        return compressed, True

    return in_order([functools.partial(member, run) for run in cut], jobs)
