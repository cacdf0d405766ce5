"""`tcbuild build`: fetch, compose the initramfs, write kernel + initrd + build.json atomically.

The same recipe and inputs give byte-identical outputs; an unchanged recipe is not rebuilt.
A base core or an extension is read once: its index and its files' data are kept in the cache
(`incremental.py`, `store.py`), and builds compose from the indexes, entries without their
data. Both modes cut
the image into runs of entries where the entries say (`runs.split`), each run a gzip member
kept in the cache under the digest of its entries (metadata and contents' sha256) and the
settings: a rebuild loads data and compresses (on both cores, `compress`) only the runs it has
not made before (an edited overlay file's, an added extension's and their neighbours'), and
gives the bytes a cold build gives. The initrd is written as its members come, never held whole.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..atomic import publish_files
from ..check import run as checkrun
from ..check.rules import Finding
from ..config.inventoryfile import load_inventory
from ..config.recipe import CheckPolicy, ExtensionMode, OutputMode, Recipe
from ..errors import RecipeError, StateError, boundary
from ..formats import tcz
from ..formats.compress import Compression
from ..formats.manifest import MANIFEST, FileRecord, Manifest, describe, read_manifest
from ..image import compose, incremental, runs, store
from ..image.overlay import Templates, overlay_digest, read_overlay
from ..sources.cache import Cache, default_cache_dir
from ..sources.fetch import fetch
from ..sources.inputs import FetchOptions, Inputs
from ..version import FORMAT, __version__

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
            _refuse(recipe, kept)
            return _warned(BuildResult(out, kernel_out, initrd_out, build_id, True,
                                       len(previous.entries), initrd_out.stat().st_size,
                                       time.monotonic() - started, tuple(kept)))
    cache = Cache(options.fetch.cache_dir or default_cache_dir())
    try:
        result = _build(recipe, inputs, build_id, out, cache, options.jobs)
    except store.Damaged as e:
        log.debug("cache: %s: reading the inputs again", e)
        result = _build(recipe, inputs, build_id, out, cache, options.jobs, fresh=True)
    return _warned(replace(result, seconds=time.monotonic() - started))


def _build(recipe: Recipe, inputs: Inputs, build_id: str, out: Path, cache: Cache, jobs: int,
           *, fresh: bool = False) -> BuildResult:
    """Compose, check, and write the outputs as their gzip members come (see the module doc).
    `fresh`: read every input again, its index and data made anew (they were damaged)."""
    kernel_out, initrd_out = out / recipe.flavor.kernel, out / recipe.initrd_name
    with store.Store() as contents:
        tree = compose_tree(recipe, inputs, build_id, cache, contents, fresh=fresh)
        kernel = inputs.kernel.path.read_bytes()
        findings: list[Finding] = []
        if recipe.check is not CheckPolicy.OFF:
            findings = checkrun.tree_findings(tree, inputs, kernel, recipe.check_ignore, cache)
            _refuse(recipe, findings)
        append = recipe.output is OutputMode.APPEND
        cut = runs.append_runs(tree) if append else runs.repack(tree)
        initrd = hashlib.sha256()
        size = compressed = count = 0

        def parts() -> Iterator[bytes | bytearray]:
            nonlocal size, compressed, count
            shipped = (_chunks(part.path) for part in inputs.core) if append else ()
            for part in itertools.chain(*shipped):  # the base core as the mirror ships it
                initrd.update(part)
                size += len(part)
                yield part
            for member, now in incremental.members(tree, cut, recipe.compression, cache,
                                                   jobs):
                initrd.update(member)
                size += len(member)
                compressed += now
                count += 1
                yield member

        def manifest() -> bytes:  # once the initrd is written: it records its digest
            log.debug("build: %d of %d gzip members compressed, the rest from the cache",
                      compressed, count)
            made = _manifest(recipe, inputs, build_id, tree, initrd.hexdigest(), size)
            if recipe.check is not CheckPolicy.OFF:
                made = replace(made, check=checkrun.stored(findings, recipe.check_ignore))
            return made.text()

        publish_files(out, {
            kernel_out.name: kernel,
            initrd_out.name: parts(),
            MANIFEST: manifest,
        }, retire=MANIFEST)  # outputs and their manifest never disagree
    return BuildResult(out, kernel_out, initrd_out, build_id, False, len(tree.items), size, 0.0,
                       tuple(findings), compressed)


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def _refuse(recipe: Recipe, findings: list[Finding]) -> None:
    """`check = "error"`: findings fail the build, before anything is written."""
    if recipe.check is CheckPolicy.ERROR and findings:
        raise checkrun.CheckFailed(findings)


def _warned(result: BuildResult) -> BuildResult:
    """`check = "warn"`: each finding of a build that succeeded is a warning, once."""
    for finding in result.findings:
        log.warning("%s", finding.line())
    return result


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    return int(value) if value and value.isdigit() else None


def compose_tree(recipe: Recipe, inputs: Inputs, build_id: str, cache: Cache,
                 contents: store.Store, *, fresh: bool = False) -> compose.Tree:
    """The image tree: base, removals, extensions, overlays, attributes.

    The base's and the extensions' entries come from their indexes in the cache, their data
    left there until a file's is needed (`contents`); an input read for the first time (or
    `fresh`) is indexed and its data kept.
    """
    tree = incremental.base(inputs, cache, contents, fresh)
    tree.load = contents.read
    epoch = source_date_epoch()
    tree.mtime = epoch if epoch is not None else max(
        (item.entry.mtime for item in tree.items.values()), default=0)
    if recipe.remove:
        compose.remove(tree, recipe.remove, recipe.path)
    deps = inputs.resolution.graph
    if recipe.mode is ExtensionMode.UNPACKED:
        scripts = [ext.name.removesuffix(".tcz") for ext in inputs.extensions
                   if compose.add_extension(tree, ext.name,
                                          incremental.extension(ext, cache, contents, fresh))]
        compose.add_setup_list(tree, scripts)
    else:
        for ext in inputs.extensions:
            tcz.check_tcz(ext.path, ext.label)
        compose.add_onboot(tree, [(ext.name, ext.path.read_bytes(), deps.get(ext.name, ()))
                                for ext in inputs.extensions])
    templates = Templates(template_context(recipe, inputs.kernel_version, build_id), cache)
    for overlay in recipe.overlays:
        compose.add_overlay(tree, read_overlay(overlay.source, templates, tree.mtime))
    compose.apply_attributes(tree, recipe.files, recipe.path)
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
        "format": FORMAT,
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


def _manifest(recipe: Recipe, inputs: Inputs, build_id: str, tree: compose.Tree,
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
                      else describe(compose.shared(tree, item), item.origin)
                      for _, item in compose.provenance(tree)))


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
