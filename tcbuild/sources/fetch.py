"""Everything a recipe names, resolved, downloaded, verified and cached.

`resolve(recipe)` reads the `.dep` graph; `fetch(recipe)` also downloads the kernel, the core and
every extension. With everything cached neither makes a network request; `offline=True` never
does, and names everything the cache lacks.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import hashlib
import logging
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

from ..config.lockfile import read_lock
from ..config.recipe import CheckPolicy, Recipe, extension_filename
from ..errors import ChecksumError, FetchError, RecipeError, boundary
from ..formats import tcz
from .cache import Absent, Cache, CachedObject, default_cache_dir
from .deps import DEP_NAME, Resolution, needs_kernel, parse_dep, substitute_kernel
from .inputs import FetchOptions, Input, Inputs, kernel_version
from .mirror import Mirrors, NotFound, iso_path, parse_md5_txt, release_path, tcz_path

PROVIDES = "provides.db.gz"  # which extension has which file (Tiny Core's provides.sh reads it)
T = TypeVar("T")
log = logging.getLogger("tcbuild")


@boundary
def resolve(recipe: Recipe, options: FetchOptions | None = None) -> Resolution:
    """The recipe's extension dependency graph and load order."""
    with _Fetcher(recipe, options or FetchOptions()) as fetcher:
        return fetcher.finish(fetcher.resolve())


@boundary
def fetch(recipe: Recipe, options: FetchOptions | None = None) -> Inputs:
    """Download and verify (or find in the cache) every input of the recipe."""
    with _Fetcher(recipe, options or FetchOptions()) as fetcher:
        return fetcher.finish(fetcher.fetch())


def fetch_provides(recipe: Recipe, options: FetchOptions | None = None) -> bytes | None:
    """The mirror's `provides.db` (see `_Fetcher.provides`)."""
    with _Fetcher(recipe, options or FetchOptions()) as fetcher:
        return fetcher.finish(fetcher.provides())()


def _provides(data: bytes, key: str) -> bytes:
    """`provides.db.gz` decompressed (its CRC checked): records of an extension name, then files."""
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise FetchError(f"{key}: not a gzip file ({e})") from e
    first = text.lstrip().split(b"\n", 1)[0].strip()
    if text.strip() and not first.endswith(b".tcz"):
        raise FetchError(f"{key}: not a provides.db (its first record is not a .tcz name)")
    return text


def _read_provides(data: bytes | None, key: str) -> bytes | None:
    """`provides.db` out of the gzip `_Fetcher.provides` found; None (a warning) if damaged."""
    try:
        return None if data is None else _provides(data, key)
    except FetchError as e:
        log.warning("%s (the check names no extensions)", e)
        return None


def _md5(path: Path) -> str:
    return _digests(path)[0]


def _digests(path: Path) -> tuple[str, str, int]:
    """md5, sha256 and size of a file, read once."""
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return md5.hexdigest(), sha256.hexdigest(), size


class _Offline(Exception):
    """A file the cache lacks while offline; collected, then reported together."""


class _Fetcher(AbstractContextManager["_Fetcher"]):
    """One fetch session: a cache, the mirrors, a thread pool and what went missing."""

    def __init__(self, recipe: Recipe, options: FetchOptions) -> None:
        self.recipe = recipe
        self.options = options
        self.cache = Cache(options.cache_dir or default_cache_dir())
        self.mirrors = Mirrors(recipe.mirrors, options.policy)
        self.local = {extension_filename(path.name): path for path in recipe.local}
        self.pool = ThreadPoolExecutor(max(1, options.jobs), thread_name_prefix="fetch")
        self.missing: list[str] = []
        self.used: dict[str, str] = {}
        self._refreshed: set[str] = set()
        self.warnings: list[str] = []
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._kernel_lock = threading.Lock()
        self._kernel_version: str | None = None
        self._iso_lock = threading.Lock()
        self._from_iso: dict[str, Input] | None = None
        self.lock_table = (options.lock if options.lock is not None
                           else read_lock(recipe) if options.lock_file else None)
        self._done = self._expected = 0

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(cancel_futures=True)

    def finish(self, result: T) -> T:
        """Raise what the offline cache lacked; print warnings; else pass the result through."""
        for warning in self.warnings:
            log.warning(warning)
        if self.missing:
            lines = sorted(set(self.missing))
            raise FetchError(
                f"offline: {len(lines)} file(s) missing from the cache {self.cache.root}: "
                + ", ".join(lines)
            )
        return result

    # -- the plan ------------------------------------------------------------------------------

    @property
    def build(self) -> str:
        return self.recipe.flavor.build

    def release_key(self, filename: str) -> str:
        return release_path(self.recipe.major, self.build, filename)

    def tcz_key(self, filename: str) -> str:
        return tcz_path(self.recipe.major, self.build, filename)

    # -- primitives ----------------------------------------------------------------------------

    def lock(self, key: str) -> threading.Lock:
        """One lock per mirror path, so parallel workers fetch each file once."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def note(self, key: str, sha256: str) -> None:
        """Record an input; with a lock, it must be the locked file."""
        with self._guard:
            self.used[key] = sha256
        locked = (self.lock_table or {}).get(key)
        if locked is not None and locked != sha256:
            raise ChecksumError(f"{key}: differs from the lock file (locked sha256 {locked}, "
                                f"got {sha256})")

    def small(self, key: str, cache_absence: bool,
              verify: Callable[[bytes], object] | None = None) -> bytes | None:
        """A small mirror file (`.dep`, `.md5.txt`), from the cache if there; None if absent.

        `verify` raises on a body not to be kept (before it reaches the cache).
        """
        with self.lock(key):
            hit = None if self.stale(key) else self.cache.lookup(key)
            if isinstance(hit, CachedObject):
                return hit.path.read_bytes()
            if isinstance(hit, Absent) and cache_absence:
                return None
            if self.options.offline:
                raise _Offline(key)
            got = self.mirrors.get(key)
            if got is None:
                if cache_absence:
                    self.cache.store_absent(key, self.recipe.mirrors[0] + key)
                return None
            url, body = got
            if verify is not None:
                verify(body)
            self.cache.store_bytes(key, body, url)
            return body

    def large(self, name: str, key: str) -> Input:
        """A release file or extension, verified against its `.md5.txt`, cached by content."""
        with self.lock(key):
            hit = self.cache.lookup(key)
            if isinstance(hit, CachedObject) and not self.options.refresh:
                self.note(key, hit.sha256)
                return Input(name, hit.path, hit.sha256, hit.size, "cache")
            if self.options.offline:
                raise _Offline(key)
            md5_text = self.small(f"{key}.md5.txt", cache_absence=False)
            if md5_text is None:
                raise NotFound(f"{name}: not found on any mirror ({', '.join(self.mirrors.urls)})")
            expected = parse_md5_txt(md5_text, f"{key}.md5.txt")
            if isinstance(hit, CachedObject) and _md5(hit.path) == expected:
                self.note(key, hit.sha256)  # refreshed: the mirror still has this file
                return Input(name, hit.path, hit.sha256, hit.size, "cache")
            with self.cache.writer() as (out, tmp):
                got = self.mirrors.download(key, out, expected, *self._progress())
                obj = self.cache.store(key, out, tmp, got.sha256, got.size, got.url)
            self.note(key, obj.sha256)
            return Input(name, obj.path, obj.sha256, obj.size, got.mirror)

    def stale(self, key: str) -> bool:
        """With `refresh`, a small file is asked for again, once per run."""
        if not self.options.refresh:
            return False
        with self._guard:
            first = key not in self._refreshed
            self._refreshed.add(key)
        return first

    def _progress(self) -> tuple[Callable[[int], None] | None, Callable[[int], None] | None]:
        report = self.options.progress
        if not report:  # None (or False): nothing to report to
            return None, None

        def advance(count: int) -> None:
            with self._guard:
                self._done += count
                done, expected = self._done, self._expected
            report(done, expected)

        def grow(length: int) -> None:
            with self._guard:
                self._expected += length
                done, expected = self._done, self._expected
            report(done, expected)

        return advance, grow

    def parallel(self, fn: Callable[[str], T], names: list[str]) -> Iterator[T | None]:
        """`fn` over names on the pool, in order; a file missing offline gives None."""
        futures = [self.pool.submit(fn, name) for name in names]
        for future in futures:
            try:
                yield future.result()
            except _Offline as e:
                self.missing.append(str(e))
                yield None

    # -- release files and the kernel version ----------------------------------------------------

    def release_file(self, filename: str) -> Input:
        return self.large(filename, self.release_key(filename))

    def distribution_file(self, filename: str) -> Input:
        """The kernel or a core part: a mirror distribution file, or out of the recipe's ISO."""
        if self.recipe.iso is None:
            return self.release_file(filename)
        with self._iso_lock:
            if self._from_iso is None:
                self._from_iso = self.from_iso(self.iso_image())
            return self._from_iso[filename]

    def iso_image(self) -> Input:
        """The recipe's ISO: the mirror's (verified against its `.md5.txt`) or a local file."""
        iso = self.recipe.iso
        assert iso is not None
        if iso.path is None:
            return self.large(iso.name, iso_path(self.recipe.major, self.build, iso.name))
        return self.local_file(iso.path, f"local/{iso.name}")

    def from_iso(self, image: Input) -> dict[str, Input]:
        """The flavour's kernel and core parts out of the ISO's `/boot`, each kept in the cache
        under the ISO's sha256 (an unchanged ISO is not opened again)."""
        names = (self.recipe.flavor.kernel, *self.recipe.flavor.core_parts)
        found: dict[str, Input] = {}
        for name in names:
            hit = self.cache.lookup(f"iso/{image.sha256}/{name}")
            if isinstance(hit, CachedObject):
                found[name] = Input(name, hit.path, hit.sha256, hit.size, "cache")
        missing = [name for name in names if name not in found]
        if missing:
            from .isoread import OfficialIso

            label = str(image.path) if image.origin == "local" else image.name
            with OfficialIso(image.path, label) as iso:
                for name in missing:
                    with self.cache.writer() as (out, tmp):
                        iso.extract(name, out)
                        out.flush()
                        _, sha256, size = _digests(tmp)
                        obj = self.cache.store(f"iso/{image.sha256}/{name}", out, tmp, sha256,
                                               size, f"{label}:/boot/{name}")
                    found[name] = Input(name, obj.path, obj.sha256, obj.size, image.name)
        return {name: found[name] for name in names}

    def kernel_version(self) -> str:
        """From the core's `lib/modules/` (never the build host's), computed once per core."""
        with self._kernel_lock:
            if self._kernel_version is None:
                parts = [self.distribution_file(name)
                         for name in self.recipe.flavor.core_parts]
                note_key = hashlib.sha256("".join(p.sha256 for p in parts).encode()).hexdigest()
                version = self.cache.note(note_key).get("kernel_version")
                if not isinstance(version, str):
                    version = kernel_version(tuple(p.path for p in parts),
                                             tuple(p.name for p in parts))
                    self.cache.add_note(note_key, kernel_version=version)
                self._kernel_version = version
            return self._kernel_version

    def provides(self) -> Callable[[], bytes | None]:
        """The mirror's `provides.db` (gzipped), cached like a `.dep` once its gzip checksum and
        records check out; given as its reader, which decompresses it when called (a build, only
        to check an image) and gives None when the mirror has none or, offline, the cache has
        none: the check then names no extension."""
        key = self.tcz_key(PROVIDES)
        data = None
        try:
            data = self.small(key, cache_absence=True, verify=lambda body: _provides(body, key))
        except _Offline:
            log.debug("%s: not in the cache; the check names no extensions", key)
        except FetchError as e:
            self.warnings.append(f"{e} (the check names no extensions)")
        return functools.partial(_read_provides, data, key)

    # -- extensions ----------------------------------------------------------------------------

    def dependencies(self, name: str) -> tuple[str, ...] | None:
        """The `.dep` of an extension, KERNEL substituted; None when the extension is not there."""
        if name in self.local:
            dep_file = self.local[name].with_name(f"{name}.dep")
            text: bytes | None = dep_file.read_bytes() if dep_file.is_file() else None
            source, key = str(dep_file), f"local/{name}.dep"
        else:
            if self.small(self.tcz_key(f"{name}.md5.txt"), cache_absence=False) is None:
                return None
            key = self.tcz_key(f"{name}.dep")
            text = self.small(key, cache_absence=True)
            source = self.recipe.mirrors[0] + key
        self.note(key, hashlib.sha256(text).hexdigest() if text is not None else "absent")
        deps = []
        for dep in parse_dep(text or b""):
            if not DEP_NAME.match(dep):
                raise FetchError(f"{source}: '{dep}' is not an extension file name")
            deps.append(substitute_kernel(dep, self.kernel_version()) if needs_kernel(dep) else dep)
        return tuple(deps)

    def resolve(self) -> Resolution:
        """Walk the `.dep` graph breadth-first, one parallel round per level."""
        roots = (*self.recipe.install, *self.local)
        if any(needs_kernel(name) for name in roots):
            try:
                version = self.kernel_version()
            except _Offline as e:
                self.missing.append(str(e))
                return Resolution(roots, {})
            roots = tuple(substitute_kernel(name, version) for name in roots)
        graph: dict[str, tuple[str, ...]] = {}
        absent: list[str] = []
        level = list(roots)
        while level:
            fresh = [name for name in dict.fromkeys(level) if name not in graph]
            for name, deps in zip(fresh, self.parallel(self.dependencies, fresh), strict=True):
                graph[name] = deps or ()
                if deps is None and not self.options.offline:
                    absent.append(name)
            level = [dep for name in fresh for dep in graph[name]]
        resolution = Resolution(roots, graph)
        if absent:
            self.report_absent(resolution, absent)
        self.warnings += [f"dependency cycle: {' -> '.join(c)}" for c in resolution.cycles]
        return resolution

    def report_absent(self, resolution: Resolution, absent: list[str]) -> None:
        """Top-level names are recipe errors (exit 2); a missing dependency names its chain."""
        roots = [name for name in absent if name in resolution.roots]
        if roots:
            known = self.mirror_index()
            problems = []
            for name in roots:
                index = resolution.roots.index(name)
                stem = self.recipe.install[index].removesuffix(".tcz")
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
                hint = f" (did you mean '{close[0].removesuffix('.tcz')}'?)" if close else ""
                problems.append(
                    f"{self.recipe.path}: extensions.install[{index}]: '{stem}' is not on the "
                    f"mirror{hint}"
                )
            raise RecipeError(problems)
        lines = []
        for name in absent:
            chain = [self.recipe.path.name, *(n.removesuffix(".tcz")
                                              for n in resolution.chain(name)[:-1])]
            lines.append(f"{' -> '.join(chain)} -> {name}: not found on any mirror")
        raise FetchError("\n".join(lines))

    def mirror_index(self) -> list[str]:
        """Every extension name the mirror lists in `md5.db.gz` (for suggestions; may be empty)."""
        try:
            got = self.mirrors.get(self.tcz_key("md5.db.gz"))
            text = gzip.decompress(got[1]) if got else b""
        except (FetchError, OSError, EOFError):
            return []
        return [line.split()[-1] for line in text.decode("utf-8", "replace").splitlines()
                if line.strip()]

    def extension(self, name: str) -> Input:
        path = self.local.get(name)
        if path is None:
            return self.large(name, self.tcz_key(name))
        if path.is_dir():
            return self.pack(name, path)
        return self.local_file(path, f"local/{name}")

    def local_file(self, path: Path, key: str) -> Input:
        """A file beside the recipe, checked against a `<name>.md5.txt` beside it if there."""
        md5, sha256, size = _digests(path)
        md5_file = path.with_name(f"{path.name}.md5.txt")
        if md5_file.is_file():
            expected = parse_md5_txt(md5_file.read_bytes(), str(md5_file))
            if md5 != expected:
                raise ChecksumError(
                    f"{path}: checksum mismatch: expected md5 {expected} ({md5_file.name}), "
                    f"got {md5}"
                )
        self.note(key, sha256)
        return Input(path.name, path, sha256, size, "local")

    def pack(self, name: str, directory: Path) -> Input:
        """A local directory packed into a `.tcz` (reproducibly), kept in the cache."""
        with self.cache.writer() as (out, tmp):
            tcz.pack_directory(directory, tmp)
            data = tmp.read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
            obj = self.cache.store(f"local/{name}", out, tmp, sha256, len(data), str(directory))
        self.note(f"local/{name}", obj.sha256)
        return Input(name, obj.path, obj.sha256, obj.size, "local")

    # -- the whole fetch -----------------------------------------------------------------------

    def fetch(self) -> Inputs:
        """Release files start downloading first; extensions follow as the graph is known."""
        flavor = self.recipe.flavor
        release = [self.pool.submit(self.distribution_file, name)
                   for name in (flavor.kernel, *flavor.core_parts)]
        provides = (self.pool.submit(self.provides) if self.recipe.check is not CheckPolicy.OFF
                    else None)
        resolution = self.resolve()
        extensions = list(self.parallel(self.extension, list(resolution.order)))
        files = []
        for future in release:
            try:
                files.append(future.result())
            except _Offline as e:
                self.missing.append(str(e))
        if self.missing:
            self.finish(None)
        version = self.kernel_version()
        if self.options.locked:
            self.check_locked()
        return Inputs(
            recipe=self.recipe,
            kernel=files[0],
            core=tuple(files[1:]),
            kernel_version=version,
            resolution=resolution,
            extensions=tuple(e for e in extensions if e is not None),
            used=dict(sorted(self.used.items())),
            read_provides=None if provides is None else provides.result(),
        )

    def check_locked(self) -> None:
        """`--locked`: the inputs are exactly the lock's, nothing added or dropped."""
        lock = self.lock_table
        if lock is None:
            raise FetchError(f"{self.recipe.path}: --locked, but there is no lock file "
                             "(run tcbuild lock)")
        added = sorted(set(self.used) - set(lock))
        dropped = sorted(set(lock) - set(self.used))
        if added or dropped:
            raise FetchError("\n".join(
                [f"{key}: not in the lock file" for key in added]
                + [f"{key}: in the lock file but no longer used" for key in dropped]))
