"""A content-addressed download cache, safe for several builds at once.

Layout under the cache root:
    objects/ab/ab12...   file contents, named by sha256, read-only
    refs/<mirror path>.json   what a mirror path held: {"sha256", "size", "source"} or {"absent"}
    notes/<sha256>.json  facts derived from an object (e.g. a core's kernel version)
    derived/ab/ab12...   data derived from objects (a core's index, compressed image parts),
                         named by the sha256 of everything that decides it; safe to delete,
                         and deleted when no build has used it for `DERIVED_DAYS` days
    tmp/                 downloads in progress; renamed into objects/ only after verification
Every file appears by `os.replace`, so a reader sees a complete file or none.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import FetchError

Buffer = bytes | bytearray | memoryview
DERIVED_DAYS = 30  # derived data unused this long is swept


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
        for path in (self.root / "tmp").iterdir():
            try:
                with path.open("rb") as f:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()
            except OSError:
                continue  # in use by another run, or gone already
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
        """What the cache knows of a mirror path; None when it must be fetched."""
        ref_path = self._ref_path(key)
        try:
            ref = json.loads(ref_path.read_text())
        except (OSError, ValueError):
            return None
        if ref.get("absent"):
            return Absent(ref.get("source", ""))
        path = self._object_path(ref["sha256"])
        try:
            if path.stat().st_size != ref["size"]:
                return None
        except OSError:
            return None
        return CachedObject(path, ref["sha256"], ref["size"], ref.get("source", ""))

    @contextlib.contextmanager
    def writer(self) -> Iterator[tuple[IO[bytes], Path]]:
        """A temp file in the cache; deleted unless `store` moved it into place."""
        fd, path = self._locked_temp("download-")

        try:
            with os.fdopen(fd, "wb") as f:
                yield f, path
        finally:
            path.unlink(missing_ok=True)

    def store(
        self, key: str, out: IO[bytes], tmp: Path, sha256: str, size: int, source: str
    ) -> CachedObject:
        """Move a verified temp file (still open, so locked) into the objects; point `key` at it."""
        target = self._object_path(sha256)
        target.parent.mkdir(exist_ok=True)
        out.flush()
        os.fsync(out.fileno())
        os.fchmod(out.fileno(), 0o444)
        tmp.replace(target)
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
            data: dict[str, Any] = json.loads((self.root / "notes" / f"{sha256}.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

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

    def has_derived(self, key: str) -> bool:
        """Whether something is stored under `key` (not checked: see `derived`)."""
        return self._derived_path(key).is_file()

    def store_derived(self, key: str, parts: Iterable[Buffer]) -> None:
        """Keep derived data under `key` (a sha256 of what decides it), with its own checksum."""
        target = self._derived_path(key)
        target.parent.mkdir(exist_ok=True)
        parts = list(parts)
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        fd, temp = self._locked_temp("derived-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(digest.digest())
                f.writelines(parts)
            temp.replace(target)
        finally:
            temp.unlink(missing_ok=True)

    def _derived_path(self, key: str) -> Path:
        if len(key) != 64 or key.strip("0123456789abcdef"):
            raise ValueError(f"derived data key must be a sha256 hex digest, not {key!r}")
        return self.root / "derived" / key[:2] / key

    def _write_json(self, path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = self._locked_temp("ref-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, sort_keys=True)
            temp.replace(path)
        finally:
            temp.unlink(missing_ok=True)

    def _locked_temp(self, prefix: str) -> tuple[int, Path]:
        """A new temp file, locked, that no `_sweep` of another run removed meanwhile."""
        while True:
            fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix=prefix)
            fcntl.flock(fd, fcntl.LOCK_EX)  # tells `_sweep` in other runs that this one lives
            try:
                if Path(name).stat().st_ino == os.fstat(fd).st_ino:
                    return fd, Path(name)
            except FileNotFoundError:
                pass
            os.close(fd)  # swept between its creation and the lock: take another
