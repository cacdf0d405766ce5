"""The check (`check.py`, pure) run on a build's tree or on an image on disk: what it reads.

A build checks its tree before it writes anything (`tree_findings`): with `check = "error"` a
finding fails it with nothing written. `build.json` keeps the findings, so an unchanged build
reports them again without looking. `tcbuild check IMAGE` reads a build directory or an initrd
(`image_findings`), its provenance from `build.json` as `inspect` shows it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.recipe import Recipe
from ..errors import InputError, StateError, TcbuildError, boundary
from ..formats import tcz
from ..formats.manifest import read_image, read_manifest
from ..image import compose
from ..sources.cache import Cache
from ..sources.fetch import fetch_provides
from ..sources.inputs import FetchOptions, Inputs
from ..version import __version__
from .loader import LD_SO_CONF, Program, read_program
from .rules import Finding, check_image, parse_provides

PROGRAMS_FORMAT = "tcbuild-programs-2"  # 2: malformed ELF objects
log = logging.getLogger("tcbuild")


class CheckFailed(TcbuildError):
    """`check = "error"` and the image has findings: one line each."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        super().__init__("\n".join(f.line() for f in findings))


def tree_findings(tree: compose.Tree, inputs: Inputs, kernel: bytes, ignore: Iterable[str] = (),
                  cache: Cache | None = None) -> list[Finding]:
    """The findings of a composed image, before it is written."""
    provides = parse_provides(inputs.provides) if inputs.provides else {}
    known = _programs(tree, inputs, cache)
    entries = ((compose.with_data(tree, item) if path not in known and stat.S_ISREG(
        item.entry.mode) else item.entry, item.origin) for path, item in tree.items.items())
    return check_image(entries, kernel=kernel, kernel_name=inputs.kernel.name,
                       provides=provides, ignore=ignore, read_tcz=tcz.read_tcz, known=known)


def _programs(tree: compose.Tree, inputs: Inputs, cache: Cache | None
              ) -> dict[str, Program | None]:
    """What each file of the base and of the extensions asks of the loader, by its content
    (`facts["sha256"]`): kept in the cache per input, so a rebuild loads none of their data
    again; a file not kept yet is loaded (one at a time) and read, and added."""
    keys = {compose.BASE: _key(*(part.sha256 for part in inputs.core))}
    keys |= {f"extension:{ext.name}": _key(ext.sha256) for ext in inputs.extensions}
    kept = {origin: _load(cache, key) for origin, key in keys.items()}
    known: dict[str, Program | None] = {}
    todo: list[tuple[str, str, str]] = []
    for path, item in tree.items.items():
        digest = (item.facts or {}).get("sha256")
        if (item.origin not in keys or digest is None or not stat.S_ISREG(item.entry.mode)
                or path.startswith(LD_SO_CONF)):  # the loader's configuration: read as text
            continue
        if digest in kept[item.origin]:
            known[path] = kept[item.origin][digest]
        else:
            todo.append((path, item.origin, digest))
    for path, origin, digest in todo:
        data = compose.with_data(tree, tree.items[path]).data
        known[path] = kept[origin][digest] = read_program(data or b"")
    for origin in {origin for _, origin, _ in todo}:
        if cache is not None:
            _store(cache, keys[origin], kept[origin])
    return known


def _key(*facts: str) -> str:
    text = json.dumps(["programs", PROGRAMS_FORMAT, __version__, *facts])
    return hashlib.sha256(text.encode()).hexdigest()


def _load(cache: Cache | None, key: str) -> dict[str, Program | None]:
    """Programs kept by content; empty when there are none (or none this tcbuild reads)."""
    data = None if cache is None else cache.derived(key)
    try:
        rows = json.loads(data) if data else {}
        return {digest: None if row is None else Program(
            row[0], tuple(row[1]), tuple(row[2]), tuple(row[3]),
            None if row[4] is None else (row[4][0], row[4][1]), tuple(row[5]), str(row[6]))
            for digest, row in rows.items()}
    except (ValueError, TypeError, IndexError, AttributeError):
        return {}


def _store(cache: Cache, key: str, programs: Mapping[str, Program | None]) -> None:
    rows = {digest: None if p is None else [p.interpreter, p.needed, p.rpath, p.runpath, p.abi,
                                             p.arguments, p.malformed]
            for digest, p in programs.items()}
    try:
        cache.store_derived(key, [json.dumps(rows, sort_keys=True).encode()])
    except OSError as e:  # a cache that cannot take it only makes the next check slower
        log.debug("cache: cannot keep the check's programs: %s", e)


def image_findings(target: Path, kernel: Path | None = None, provides: bytes | None = None,
                   ignore: Iterable[str] = ()) -> list[Finding]:
    """The findings of a build directory (its kernel too) or an initrd (with `kernel`)."""
    found = read_image(target)
    if kernel is None and found.manifest is not None:
        candidate = found.source.parent / found.manifest.kernel.name
        kernel = candidate if candidate.is_file() else None
    try:
        kernel_data = kernel.read_bytes() if kernel is not None else None
    except OSError as e:
        raise InputError(f"{kernel}: cannot read the kernel ({e.strerror})") from e
    entries = [(e, found.origins.get(e.path, "")) for e in found.entries]
    return check_image(entries, kernel=kernel_data,
                       kernel_name=kernel.name if kernel else "vmlinuz64",
                       provides=parse_provides(provides) if provides else {}, ignore=ignore,
                       read_tcz=tcz.read_tcz)


@boundary
def check_target(target: Path, kernel: Path | None = None, recipe: Recipe | None = None,
                 options: FetchOptions | None = None, ignore: Iterable[str] = ()
                 ) -> list[Finding]:
    """`tcbuild check`: an image's findings, with the recipe's exceptions and its mirror's
    `provides.db` naming the extensions that would fix them."""
    provides = None
    ignore = list(ignore)
    if recipe is not None:
        provides = fetch_provides(recipe, options)
        ignore += recipe.check_ignore
    return image_findings(target, kernel, provides, ignore)


@boundary
def recipe_of(target: Path) -> Path | None:
    """The recipe a build directory (or an initrd in one) was built from, if it is still there."""
    try:
        manifest = read_manifest(target if target.is_dir() else target.parent)
    except StateError:
        if target.is_dir():
            raise
        manifest = None  # a file beside the image, not the image (as `read_image`)
    path = Path(manifest.recipe) if manifest is not None else None
    return path if path is not None and path.is_file() else None


def stored(findings: Sequence[Finding], ignore: Sequence[str]) -> dict[str, Any]:
    """What `build.json` keeps of a check."""
    return {"ignore": list(ignore), "findings": [f.as_json() for f in findings]}


def restored(kept: Mapping[str, Any] | None, ignore: Sequence[str]) -> list[Finding] | None:
    """The findings an earlier build of the same image kept (`Manifest.check`); None when it
    did not check with these exceptions, or kept them in a form this tcbuild does not read."""
    if kept is None or kept.get("ignore") != list(ignore):
        return None
    try:
        return [Finding(path=f["path"], origin=f["origin"], problem=f["problem"],
                        missing=f["missing"], providers=tuple(f["providers"]), hint=f["hint"])
                for f in kept["findings"]]
    except (KeyError, TypeError):
        return None
