"""`tcbuild build`: fetch, compose the initramfs, write kernel + initrd + build.json atomically.

The same recipe and inputs give byte-identical outputs; an unchanged recipe is not rebuilt.
Both modes cut the image into runs of entries where the entries say (`image.split`), each run a
gzip member compressed on both cores (`compress`) once and kept in the cache, named by everything
its bytes depend on, so a rebuild compresses only the runs that changed (an edited overlay file's,
an added extension's and their neighbours') and gives the bytes a cold build gives. Repack names a
run by the digest of its archive; append mode leaves the base core as it is and reads neither it
nor the extensions again once the cache holds their index, naming an extension's runs by their
entries' facts so that their data is read only for a run it has not compressed before.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import checkrun, image, tcz
from .atomic import publish_files
from .cache import Cache, default_cache_dir
from .check import Finding
from .compress import Compression, gzip_member, in_threads
from .errors import RecipeError, StateError, boundary
from .fetch import fetch
from .inputs import FetchOptions, Input, Inputs
from .inventory import load_inventory
from .manifest import MANIFEST, FileRecord, Manifest, describe, read_manifest
from .newc import Entry, iter_initramfs
from .overlay import overlay_digest, read_overlay
from .recipe import CheckPolicy, ExtensionMode, OutputMode, Recipe
from .version import __version__

log = logging.getLogger("tcbuild")


@dataclass(frozen=True)
class BuildOptions:
    """Where to write, and the recipe settings a caller may override."""

    out_dir: Path | None = None  # default: build/<recipe name>
    fetch: FetchOptions = field(default_factory=FetchOptions)
    compression: Compression | None = None
    output: OutputMode | None = None
    jobs: int = 2
    force: bool = False
    check: CheckPolicy | None = None  # the recipe's [image] check, overridden


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    kernel: Path
    initrd: Path
    build_id: str
    up_to_date: bool
    entries: int
    size: int
    seconds: float
    findings: tuple[Finding, ...] = ()  # what the check found (`[image] check`)
    compressed: int = 0  # gzip members compressed by this build (the others came from the cache)

    def as_json(self) -> dict[str, object]:
        """The result as JSON-ready data (`tcbuild build --json`)."""
        return {"out_dir": str(self.out_dir), "kernel": str(self.kernel),
                "initrd": str(self.initrd), "build_id": self.build_id,
                "up_to_date": self.up_to_date, "entries": self.entries, "size": self.size,
                "seconds": round(self.seconds, 3), "compressed": self.compressed,
                "findings": [f.as_json() for f in self.findings]}


def default_out_dir(recipe: Recipe) -> Path:
    return Path("build") / recipe.name


@boundary
def build(recipe: Recipe, options: BuildOptions | None = None) -> BuildResult:
    """Build the recipe's kernel and initrd into the output directory (see module doc)."""
    options = options or BuildOptions()
    started = time.monotonic()
    recipe = replace(recipe, compression=Compression(options.compression or recipe.compression),
                     output=OutputMode(options.output or recipe.output),
                     check=CheckPolicy(options.check or recipe.check))
    inputs = fetch(recipe, options.fetch)
    out = options.out_dir or default_out_dir(recipe)
    build_id = _build_id(recipe, inputs)
    kernel_out, initrd_out = out / recipe.flavor.kernel, out / recipe.initrd_name
    previous, written = (None, None) if options.force else _previous(out)
    if (previous and previous.build_id == build_id
            and previous.settings == _settings(recipe) and _intact(out, previous, written)):
        kept = [] if recipe.check is CheckPolicy.OFF else checkrun.restored(
            previous.check, recipe.check_ignore)
        if kept is not None:
            _apply_policy(recipe, kept)
            return BuildResult(out, kernel_out, initrd_out, build_id, True,
                               len(previous.entries), initrd_out.stat().st_size,
                               time.monotonic() - started, tuple(kept))
    cache = Cache(options.fetch.cache_dir or default_cache_dir())
    append = recipe.output is OutputMode.APPEND
    tree = compose(recipe, inputs, build_id, cache, indexed=append)
    kernel = inputs.kernel.path.read_bytes()
    findings: list[Finding] = []
    if recipe.check is not CheckPolicy.OFF:
        findings = checkrun.tree_findings(tree, inputs, kernel, recipe.check_ignore, cache)
        _apply_policy(recipe, findings)
    if append:
        parts: list[bytes | bytearray] = [part.path.read_bytes() for part in inputs.core]
        members, compressed = _append_members(tree, inputs, recipe.compression, cache,
                                              options.jobs)
        parts += members
    else:
        parts, compressed = _members([(None, functools.partial(image.archive, run))
                                      for run in image.repack(tree)],
                                     recipe.compression, cache, options.jobs)
    log.debug("build: %d of %d gzip members compressed, the rest from the cache", compressed,
              len(parts))
    initrd = hashlib.sha256()
    for part in parts:
        initrd.update(part)
    size = sum(len(part) for part in parts)
    manifest = _manifest(recipe, inputs, build_id, tree, initrd.hexdigest(), size)
    if recipe.check is not CheckPolicy.OFF:
        manifest = replace(manifest, check=checkrun.stored(findings, recipe.check_ignore))
    publish_files(out, {
        kernel_out.name: kernel,
        initrd_out.name: parts,
        MANIFEST: manifest.text(),
    }, retire=MANIFEST)  # outputs and their manifest never disagree
    return BuildResult(out, kernel_out, initrd_out, build_id, False, len(tree.items), size,
                       time.monotonic() - started, tuple(findings), compressed)


def _apply_policy(recipe: Recipe, findings: list[Finding]) -> None:
    """`check = "error"`: findings fail the build (before anything is written); `warn`: each is
    a warning."""
    if recipe.check is CheckPolicy.ERROR and findings:
        raise checkrun.CheckFailed(findings)
    for finding in findings:
        log.warning("%s", finding.line())


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    return int(value) if value and value.isdigit() else None


def compose(recipe: Recipe, inputs: Inputs, build_id: str, cache: Cache | None = None, *,
            indexed: bool = False) -> image.Tree:
    """The image tree: base, removals, extensions, overlays, attributes.

    With a cache, the base's and the extensions' indexes are kept in it; `indexed` composes
    from them where they are there (entries without data, for append mode).
    """
    tree = _base(inputs, cache, indexed)
    epoch = source_date_epoch()
    tree.mtime = epoch if epoch is not None else max(
        (item.entry.mtime for item in tree.items.values()), default=0)
    if recipe.remove:
        image.remove(tree, recipe.remove, recipe.path)
    deps = inputs.resolution.graph
    if recipe.mode is ExtensionMode.UNPACKED:
        scripts = [ext.name.removesuffix(".tcz") for ext in inputs.extensions
                   if image.add_extension(tree, ext.name, _extension(ext, cache, indexed))]
        image.add_setup_list(tree, scripts)
    else:
        for ext in inputs.extensions:
            tcz.check_tcz(ext.path, _label(ext))
        image.add_onboot(tree, [(ext.name, ext.path.read_bytes(), deps.get(ext.name, ()))
                                for ext in inputs.extensions])
    context = template_context(recipe, inputs.kernel_version, build_id)
    for overlay in recipe.overlays:
        image.add_overlay(tree, read_overlay(overlay.source, context, tree.mtime))
    image.apply_attributes(tree, recipe.files, recipe.path)
    return tree


def template_context(recipe: Recipe, kernel_version: str, build_id: str
                     ) -> dict[str, str | int | float | bool]:
    """What overlay templates see: the inventory's values, the recipe's [vars], the build's."""
    return {
        **_inventory_vars(recipe),
        **recipe.vars,
        "release": recipe.release,
        "flavor": str(recipe.flavor),
        "kernel_version": kernel_version,
        "recipe_name": recipe.name,
        "build_id": build_id[:12],
    }


def _derived_key(kind: str, *facts: str) -> str:
    """The cache name of data derived from inputs: everything it depends on, hashed."""
    text = json.dumps([kind, image.INDEX_FORMAT, __version__, *facts])
    return hashlib.sha256(text.encode()).hexdigest()


def _store(cache: Cache, key: str, parts: Iterable[bytes | bytearray]) -> None:
    """Keep derived data; a cache that cannot take it only makes the next build slower."""
    try:
        cache.store_derived(key, parts)
    except OSError as e:
        log.debug("cache: cannot keep derived data: %s", e)


def _index(cache: Cache | None, key: str, indexed: bool) -> tuple[bytes | None, bool]:
    """A cached index (when `indexed`), and whether one should be stored (none, or damaged)."""
    if cache is None:
        return None, False
    if indexed:
        data = cache.derived(key)
        return data, data is None
    return None, not cache.has_derived(key)


def _base(inputs: Inputs, cache: Cache | None, indexed: bool) -> image.Tree:
    """The base core, from its index when `indexed` and cached, else read (and indexed)."""
    key = _derived_key("base", *(part.sha256 for part in inputs.core))
    data, store = _index(cache, key, indexed)
    if data is not None:
        try:
            return image.read_base_index(data)
        except (ValueError, KeyError, TypeError):
            store = True  # not an index this tcbuild reads: make it again
    tree = image.read_base(iter_initramfs(part.path, label=part.name) for part in inputs.core)
    for path, item in tree.items.items():  # build.json's facts, hashed once
        tree.items[path] = replace(item, facts=describe(image.shared(tree, item)))
    if cache is not None and store:
        _store(cache, key, [image.base_index(tree)])
    return tree


def _extension(ext: Input, cache: Cache | None, indexed: bool
               ) -> list[tuple[Entry, Mapping[str, Any]]]:
    """An extension's entries with their facts: from its index (without data) when `indexed`
    and cached, else read in full (and indexed)."""
    key = _derived_key("tcz", ext.sha256)
    data, store = _index(cache, key, indexed)
    if data is not None:
        try:
            return list(image.read_entry_index(data))
        except (ValueError, KeyError, TypeError):
            store = True  # not an index this tcbuild reads: make it again
    entries: list[tuple[Entry, Mapping[str, Any]]] = [
        (entry, describe(entry)) for entry in tcz.read_tcz(ext.path, _label(ext))]
    if cache is not None and store:
        _store(cache, key, [image.entry_index(entries)])
    return entries


def _member_key(items: list[image.Item], compression: Compression) -> str:
    """A run's cache name from its entries (their facts, data not needed)."""
    rows = []
    for item in items:
        e = item.entry
        linked = stat.S_ISREG(e.mode) and e.nlink > 1
        rows.append([e.name, e.mode, e.uid, e.gid, e.nlink, e.mtime, e.size, *e.rdev,
                     e.ino if linked else 0, image.content_digest(item)])
    text = json.dumps(rows, separators=(",", ":"))
    return _compressed_key(hashlib.sha256(text.encode()).hexdigest(), compression)


def _compressed_key(digest: str, compression: Compression) -> str:
    """Everything the gzip member of a run depends on: what names the run, the settings."""
    import deflate  # loaded where used: `import tcbuild` stays light

    return _derived_key("member", compression.value, str(compression.level),
                        deflate.__version__, digest)


Run = Callable[[], bytes]  # a run's archive, made when called


def _members(runs: list[tuple[str | None, Run]], compression: Compression, cache: Cache,
             jobs: int) -> tuple[list[bytes | bytearray], int]:
    """The gzip members of the runs, in order, on `jobs` threads, and how many were compressed
    now: each from the cache under its key (None: the digest of the run's archive) when kept
    there intact, else compressed and kept."""
    def member(key: str | None, run: Run) -> tuple[bytes | bytearray, bool]:
        data = None
        if key is None:
            data = run()
            key = _compressed_key(hashlib.sha256(data).hexdigest(), compression)
        cached = cache.derived(key)
        if cached is not None:
            return cached, False
        compressed = gzip_member(run() if data is None else data, compression)
        _store(cache, key, [compressed])
        return compressed, True

    done = in_threads([functools.partial(member, key, run) for key, run in runs], jobs)
    return [m for m, _ in done], sum(now for _, now in done)


def _append_members(tree: image.Tree, inputs: Inputs, compression: Compression, cache: Cache,
                    jobs: int) -> tuple[list[bytes | bytearray], int]:
    """The appended gzip members (see `_members`): an extension's runs looked up by their
    entries, its data read only for a run not kept; the rest (overlays, generated files, the
    directories on the way) by their bytes."""
    extensions = {ext.name: ext for ext in inputs.extensions}
    loaded: dict[str, dict[str, bytes | None]] = {}
    lock = threading.Lock()

    def archive(name: str | None, chunk: list[Entry], paths: list[str]) -> bytes:
        if any(e.data is None and stat.S_ISREG(e.mode) for e in chunk):
            assert name is not None  # only an extension's files come without their data
            with lock:  # read once, when a run of it is not kept
                if name not in loaded:
                    ext = extensions[name]
                    loaded[name] = {e.path: e.data for e in tcz.read_tcz(ext.path, _label(ext))}
            data = loaded[name]
            chunk = [replace(e, data=data[path]) if e.data is None and stat.S_ISREG(e.mode)
                     else e for e, path in zip(chunk, paths, strict=True)]
        return image.archive(chunk)

    runs: list[tuple[str | None, Run]] = []
    for name, paths in image.append_groups(tree):
        items = [tree.items[p] for p in paths]
        start = 0
        for chunk in image.split([item.entry for item in items]):
            chunk_items, start = items[start : start + len(chunk)], start + len(chunk)
            key = None if name is None else _member_key(chunk_items, compression)
            runs.append((key, functools.partial(archive, name, chunk,
                                                paths[start - len(chunk) : start])))
    return _members(runs, compression, cache, jobs)


def _label(ext: Input) -> str:
    """How errors name an extension: a mirror one by name, a local one with its path too."""
    return f"{ext.name} ({ext.path})" if ext.origin == "local" else ext.name


def _inventory_vars(recipe: Recipe) -> dict[str, str | int]:
    """The cluster's values from the recipe's inventory; a recipe may not set them again."""
    if recipe.inventory is None:
        return {}
    values = load_inventory(recipe.inventory).cluster.template_vars()
    clashes = sorted(set(values) & set(recipe.vars))
    if clashes:
        raise RecipeError([f"{recipe.path}: vars.{name}: also set by the inventory "
                           f"{recipe.inventory} (a value lives in one place)" for name in clashes])
    return values


def _build_id(recipe: Recipe, inputs: Inputs) -> str:
    """A digest of everything that decides what the booted image holds.

    How it is encoded (compression, repack or append) is left out: both give the same files.
    """
    settings = _settings(recipe)
    del settings["compression"], settings["output"]
    facts = {
        "tcbuild": __version__,
        "settings": settings,
        "vars": dict(recipe.vars),
        "files": {p: [a.mode, a.owner, a.group] for p, a in recipe.files.items()},
        "inputs": [[f.name, f.sha256] for f in inputs.files],
        "overlays": [overlay_digest(o.source) for o in recipe.overlays],
        "inventory": _inventory_vars(recipe),
        "source_date_epoch": source_date_epoch(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _settings(recipe: Recipe) -> dict[str, Any]:
    return {
        "release": recipe.release, "flavor": str(recipe.flavor), "mode": str(recipe.mode),
        "output": str(recipe.output), "compression": str(recipe.compression),
        "remove": list(recipe.remove), "append": recipe.append,
        "initrd_name": recipe.initrd_name,
    }


def _manifest(recipe: Recipe, inputs: Inputs, build_id: str, tree: image.Tree,
              initrd_sha256: str, initrd_size: int) -> Manifest:
    kernel = inputs.kernel
    return Manifest(
        tcbuild=__version__, build_id=build_id, recipe=str(recipe.path), name=recipe.name,
        kernel_version=inputs.kernel_version, settings=_settings(recipe),
        inputs=tuple(FileRecord(f.name, f.sha256, f.size) for f in inputs.files),
        kernel=FileRecord(recipe.flavor.kernel, kernel.sha256, kernel.size),
        initrd=FileRecord(recipe.initrd_name, initrd_sha256, initrd_size),
        shadowed=tuple(tree.shadowed),
        entries=tuple({**item.facts, "origin": item.origin} if item.facts is not None
                      else describe(image.shared(tree, item), item.origin)
                      for _, item in image.provenance(tree)))


def _previous(out: Path) -> tuple[Manifest | None, os.stat_result | None]:
    """The manifest of what `out` holds, and the stat of its file taken before it was read (see
    `_intact`); a damaged one only means a rebuild (it is replaced)."""
    try:
        written: os.stat_result | None = (out / MANIFEST).stat()
    except OSError:
        written = None  # reading it says what is wrong
    try:
        return read_manifest(out), written
    except StateError:
        return None, None


def _intact(out: Path, manifest: Manifest, written: os.stat_result | None) -> bool:
    """The outputs a manifest names are there, unchanged: of the size it records, and unless
    untouched since the build, of the sha256 it records.

    A build writes its manifest after the outputs and renames it into place after them, so an
    output the file system shows modified before the manifest was written (mtime) and changed
    no later than it was renamed (ctime, which no tool sets back) is the one that build wrote;
    any other is read and hashed. Unseen: damage below the file system, a clock set back, and
    a change with its mtime set back within the clock tick of the build's last rename."""
    for output in (manifest.kernel, manifest.initrd):
        path = out / output.name
        try:
            found = path.stat()
            if found.st_size != output.size:
                return False
            if (written is not None and found.st_mtime_ns < written.st_mtime_ns
                    and found.st_ctime_ns <= written.st_ctime_ns):
                continue
            if hashlib.sha256(path.read_bytes()).hexdigest() != output.sha256:
                return False
        except OSError:
            return False
    return True
