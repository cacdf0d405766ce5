"""A content-addressed download cache, safe for several builds at once.

Layout under the cache root:
    objects/ab/ab12...   file contents, named by sha256, read-only
    refs/<mirror path>.json   what a mirror path held: {"sha256", "size", "source"} or {"absent"}
    notes/<sha256>.json  facts derived from an object (e.g. a core's kernel version)
    derived/ab/ab12...   data derived from objects (a core's index, its files' data, compressed
                         image parts), named by the sha256 of everything that decides it; safe
                         to delete, and deleted when no build has used it for `DERIVED_DAYS` days
    tmp/                 downloads in progress; renamed into objects/ only after verification
Every file appears by `os.replace`, so a reader sees a complete file or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..atomic import commit, sweep, temp_file, write_bytes
from ..errors import FetchError, StateError
from ..formats.statefile import Fields

Buffer = bytes | bytearray | memoryview
DERIVED_DAYS = 30  # derived data unused this long is swept


class CacheError(StateError):
    """A damaged file in the cache (a ref, a note)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} (a damaged cache entry: delete it)")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/tcbuild`, or `~/.cache/tcbuild`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tcbuild"


@dataclass(frozen=True)
class CachedObject:
    """A verified file in the cache."""

    path: Path
    sha256: str
    size: int
    source: str


@dataclass(frozen=True)
class Absent:
    """A mirror path known not to exist (a `.dep` 404: no dependencies)."""

    source: str


class Cache:
    """Objects by content, refs by mirror path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            for sub in ("objects", "refs", "notes", "derived", "tmp"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FetchError(f"{root}: cannot use as cache: {e.strerror or e}") from e
        self._sweep()

    def _sweep(self) -> None:
        """Delete temp files left by killed runs (those no live writer holds a lock on), and
        derived data no build has used for `DERIVED_DAYS` days."""
        sweep(self.root / "tmp", everything=True)
        stale = time.time() - DERIVED_DAYS * 86400
        for path in (self.root / "derived").glob("*/*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < stale:
                    path.unlink()

    def _ref_path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"unsafe cache key {key!r}")
        return self.root / "refs" / f"{key}.json"

    def _object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def lookup(self, key: str) -> CachedObject | Absent | None:
        """What the cache knows of a mirror path; None when it must be fetched. A damaged ref
        is a StateError naming it (delete it, and the file is fetched again)."""
        ref_path = self._ref_path(key)
        try:
            ref = Fields.read(ref_path, CacheError)
        except FileNotFoundError:
            return None
        source = ref.string("source")
        if ref.flag("absent"):
            return Absent(source)
        sha256, size = ref.sha256("sha256"), ref.number("size")
        path = self._object_path(sha256)
        try:
            if path.stat().st_size != size:
                return None
        except OSError:
            return None
        return CachedObject(path, sha256, size, source)

    @contextlib.contextmanager
    def writer(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A temp file in the cache; deleted unless `store` moved it into place."""
        with temp_file(self.root / "tmp", "download-") as (f, path):
            yield f, path

    def store(
        self, key: str, out: BinaryIO, tmp: Path, sha256: str, size: int, source: str
    ) -> CachedObject:
        """Move a verified temp file (still open, so locked) into the objects; point `key` at it."""
        target = self._object_path(sha256)
        target.parent.mkdir(exist_ok=True)
        commit(out, tmp, target, 0o444)
        self._write_json(self._ref_path(key), {"sha256": sha256, "size": size, "source": source})
        return CachedObject(target, sha256, size, source)

    def store_bytes(self, key: str, data: bytes, source: str) -> CachedObject:
        with self.writer() as (f, tmp):
            f.write(data)
            return self.store(key, f, tmp, hashlib.sha256(data).hexdigest(), len(data), source)

    def store_absent(self, key: str, source: str) -> Absent:
        self._write_json(self._ref_path(key), {"absent": True, "source": source})
        return Absent(source)

    def note(self, sha256: str) -> dict[str, Any]:
        """Facts recorded about an object (empty when none)."""
        try:
            return Fields.read(self.root / "notes" / f"{sha256}.json", CacheError).data
        except FileNotFoundError:
            return {}

    def add_note(self, sha256: str, **facts: Any) -> None:
        self._write_json(self.root / "notes" / f"{sha256}.json", {**self.note(sha256), **facts})

    def derived(self, key: str) -> bytes | None:
        """Derived data stored under `key` (a sha256), or None; a damaged copy counts as none."""
        path = self._derived_path(key)
        try:
            stored = path.read_bytes()
        except OSError:
            return None
        digest, data = stored[:32], stored[32:]
        if hashlib.sha256(data).digest() != digest:
            return None
        with contextlib.suppress(OSError):  # used now: kept another DERIVED_DAYS
            os.utime(path)
        return data

    def store_derived(self, key: str, parts: Iterable[Buffer]) -> None:
        """Keep derived data under `key` (a sha256 of what decides it), with its own checksum."""
        target = self._derived_path(key)
        target.parent.mkdir(exist_ok=True)
        parts = list(parts)
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        write_bytes(target, [digest.digest(), *parts], 0o644, temp_dir=self.root / "tmp",
                    durable=False)  # checked whenever read: a power cut only loses it

    @contextlib.contextmanager
    def derived_writer(self, key: str) -> Iterator[BinaryIO]:
        """Stream derived data into `key`'s file: there, durably, once the block ends without an
        error. Unlike `store_derived`, no checksum of the whole: its reader checks what it reads
        (`store.Store`), a part at a time."""
        target = self._derived_path(key)
        target.parent.mkdir(exist_ok=True)
        with temp_file(self.root / "tmp", f".{key}.") as (f, temp):
            yield f
            commit(f, temp, target, durable=False)

    def derived_file(self, key: str) -> Path | None:
        """The file of `derived_writer` under `key`, when there (not checked)."""
        path = self._derived_path(key)
        try:
            os.utime(path)  # used now: kept another DERIVED_DAYS
        except OSError:
            return None
        return path

    def _derived_path(self, key: str) -> Path:
        if len(key) != 64 or key.strip("0123456789abcdef"):
            raise ValueError(f"derived data key must be a sha256 hex digest, not {key!r}")
        return self.root / "derived" / key[:2] / key

    def _write_json(self, path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, json.dumps(data, sort_keys=True).encode(), 0o644,
                    temp_dir=self.root / "tmp")
