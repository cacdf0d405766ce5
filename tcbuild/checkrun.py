"""The check (`check.py`, pure) run on a build's tree or on an image on disk: what it reads.

A build checks its tree before it writes anything (`tree_findings`): with `check = "error"` a
finding fails it with nothing written. `build.json` keeps the findings, so an unchanged build
reports them again without looking. `tcbuild check IMAGE` reads a build directory or an initrd
(`image_findings`), its provenance from `build.json` as `inspect` shows it.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import image, tcz
from .check import Finding, check_image, parse_provides
from .errors import InputError, TcbuildError
from .fetch import FetchOptions, Inputs, fetch_provides
from .manifest import read_image, read_manifest
from .newc import Entry, iter_initramfs
from .recipe import Recipe


class CheckFailed(TcbuildError):
    """`check = "error"` and the image has findings: one line each."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        super().__init__("\n".join(f.line() for f in findings))


def tree_findings(tree: image.Tree, inputs: Inputs, kernel: bytes,
                  ignore: Iterable[str] = ()) -> list[Finding]:
    """The findings of a composed image, before it is written."""
    provides = parse_provides(inputs.provides) if inputs.provides else {}
    return check_image(_with_data(tree, inputs), kernel=kernel,
                       kernel_name=inputs.kernel.name, provides=provides, ignore=ignore,
                       read_tcz=tcz.read_tcz)


def _with_data(tree: image.Tree, inputs: Inputs) -> Iterator[tuple[Entry, str]]:
    """The tree's entries with their data; a tree composed from indexes (append mode) has
    none for the base's and the extensions' files: those are read again here."""
    lacking = {path for path, item in tree.items.items()
               if item.entry.data is None and stat.S_ISREG(item.entry.mode) and item.entry.size}
    loaded: dict[str, bytes | None] = {}
    if any(tree.items[p].origin == image.BASE for p in lacking):
        base = image.read_base(iter_initramfs(part.path, label=part.name)
                               for part in inputs.core)
        loaded.update((p, image.shared(base, base.items[p]).data) for p in lacking
                      if tree.items[p].origin == image.BASE and p in base.items)
    for ext in inputs.extensions:
        origin = f"extension:{ext.name}"
        if any(tree.items[p].origin == origin for p in lacking):
            loaded.update((e.path, e.data) for e in tcz.read_tcz(ext.path, ext.name)
                          if e.path in lacking and tree.items[e.path].origin == origin)
    for path, item in tree.items.items():
        entry = image.shared(tree, item)
        if path in loaded:
            entry = replace(entry, data=loaded[path])
        yield entry, item.origin


def image_findings(target: Path, kernel: Path | None = None, provides: bytes | None = None,
                   ignore: Iterable[str] = ()) -> list[Finding]:
    """The findings of a build directory (its kernel too) or an initrd (with `kernel`)."""
    found = read_image(target)
    if kernel is None and found.manifest is not None:
        candidate = found.source.parent / found.manifest["outputs"]["kernel"]["name"]
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


def recipe_of(target: Path) -> Path | None:
    """The recipe a build directory (or an initrd in one) was built from, if it is still there."""
    manifest = read_manifest(target if target.is_dir() else target.parent)
    path = Path(manifest["recipe"]) if manifest and "recipe" in manifest else None
    return path if path is not None and path.is_file() else None


def stored(findings: Sequence[Finding], ignore: Sequence[str]) -> dict[str, Any]:
    """What `build.json` keeps of a check."""
    return {"ignore": list(ignore), "findings": [f.as_json() for f in findings]}


def restored(manifest: Mapping[str, Any], ignore: Sequence[str]) -> list[Finding] | None:
    """The findings an earlier build of the same image kept; None when it did not check with
    these exceptions."""
    kept = manifest.get("check")
    if not isinstance(kept, dict) or kept.get("ignore") != list(ignore):
        return None
    return [Finding(path=f["path"], origin=f["origin"], problem=f["problem"],
                    missing=f["missing"], providers=tuple(f["providers"]), hint=f["hint"])
            for f in kept["findings"]]
