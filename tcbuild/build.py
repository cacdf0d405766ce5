"""`tcbuild build`: fetch, compose the initramfs, write kernel + initrd + build.json atomically.

The same recipe and inputs give byte-identical outputs; an unchanged recipe is not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__, image, tcz
from .atomic import publish_files
from .compress import Compression, gzip_segments
from .errors import RecipeError
from .fetch import FetchOptions, Input, Inputs, fetch
from .inventory import load_inventory
from .manifest import MANIFEST, describe, read_manifest
from .newc import Entry, iter_initramfs
from .overlay import read_overlay
from .recipe import ExtensionMode, OutputMode, Recipe


@dataclass(frozen=True)
class BuildOptions:
    """Where to write, and the recipe settings a caller may override."""

    out_dir: Path | None = None  # default: build/<recipe name>
    fetch: FetchOptions = field(default_factory=FetchOptions)
    compression: Compression | None = None
    output: OutputMode | None = None
    jobs: int = 2
    force: bool = False


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


def default_out_dir(recipe: Recipe) -> Path:
    return Path("build") / recipe.name


def build(recipe: Recipe, options: BuildOptions | None = None) -> BuildResult:
    """Build the recipe's kernel and initrd into the output directory (see module doc)."""
    options = options or BuildOptions()
    started = time.monotonic()
    recipe = replace(recipe, compression=Compression(options.compression or recipe.compression),
                     output=OutputMode(options.output or recipe.output))
    inputs = fetch(recipe, options.fetch)
    out = options.out_dir or default_out_dir(recipe)
    build_id = _build_id(recipe, inputs)
    kernel_out, initrd_out = out / recipe.flavor.kernel, out / recipe.initrd_name
    previous = read_manifest(out)
    if (not options.force and previous and previous.get("build_id") == build_id
            and previous.get("settings") == _settings(recipe) and _intact(out, previous)):
        return BuildResult(out, kernel_out, initrd_out, build_id, True, len(previous["entries"]),
                           initrd_out.stat().st_size, time.monotonic() - started)
    tree = compose(recipe, inputs, build_id)
    if recipe.output is OutputMode.APPEND:
        data = b"".join(part.path.read_bytes() for part in inputs.core)
        data += gzip_segments(image.append_segments(tree, options.jobs), recipe.compression,
                              options.jobs)
    else:
        data = gzip_segments(image.repack(tree, options.jobs), recipe.compression, options.jobs)
    manifest = _manifest(recipe, inputs, build_id, tree, data)
    publish_files(out, {
        kernel_out.name: inputs.kernel.path.read_bytes(),
        initrd_out.name: data,
        MANIFEST: (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode(),
    }, retire=MANIFEST)  # outputs and their manifest never disagree
    return BuildResult(out, kernel_out, initrd_out, build_id, False, len(tree.items), len(data),
                       time.monotonic() - started)


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    return int(value) if value and value.isdigit() else None


def compose(recipe: Recipe, inputs: Inputs, build_id: str) -> image.Tree:
    """The image tree: base, removals, extensions, overlays, attributes."""
    tree = image.read_base(iter_initramfs(part.path, label=part.name) for part in inputs.core)
    epoch = source_date_epoch()
    tree.mtime = epoch if epoch is not None else max(
        (item.entry.mtime for item in tree.items.values()), default=0)
    if recipe.remove:
        image.remove(tree, recipe.remove, recipe.path)
    deps = inputs.resolution.graph
    if recipe.mode is ExtensionMode.UNPACKED:
        scripts = [ext.name.removesuffix(".tcz") for ext in inputs.extensions
                   if image.add_extension(tree, ext.name, tcz.read_tcz(ext.path, _label(ext)))]
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


def _overlay_digest(root: Path) -> str:
    """Everything of an overlay tree that reaches the image: names, types, exec bits, bytes."""
    h = hashlib.sha256()
    for directory, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(directory) / name
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            if path.is_symlink():
                h.update(b"L" + str(path.readlink()).encode())
            elif path.is_file():
                h.update(b"X" if os.access(path, os.X_OK) else b"F")
                h.update(hashlib.sha256(path.read_bytes()).digest())
            h.update(b"\0")
    return h.hexdigest()


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
        "overlays": [_overlay_digest(o.source) for o in recipe.overlays],
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
              data: bytes) -> dict[str, Any]:
    kernel = inputs.kernel
    return {
        "tcbuild": __version__,
        "build_id": build_id,
        "recipe": str(recipe.path),
        "name": recipe.name,
        "kernel_version": inputs.kernel_version,
        "settings": _settings(recipe),
        "inputs": [{"name": f.name, "sha256": f.sha256, "size": f.size} for f in inputs.files],
        "outputs": {
            "kernel": {"name": recipe.flavor.kernel, "sha256": kernel.sha256,
                       "size": kernel.size},
            "initrd": {"name": recipe.initrd_name, "sha256": hashlib.sha256(data).hexdigest(),
                       "size": len(data)},
        },
        "shadowed": tree.shadowed,
        "entries": [describe(_shared(tree, item), item.origin)
                    for _, item in image.provenance(tree)],
    }


def _shared(tree: image.Tree, item: image.Item) -> Entry:
    """A hard-linked base entry described with its group's data (on whichever name it is)."""
    if item.link_group is None or item.origin != image.BASE:
        return item.entry
    data = tree.link_data.get(item.link_group, b"")
    return replace(item.entry, data=data, size=len(data))


def _intact(out: Path, manifest: dict[str, Any]) -> bool:
    """The outputs a manifest names are there, unchanged."""
    for output in manifest["outputs"].values():
        path = out / output["name"]
        try:
            if path.stat().st_size != output["size"]:
                return False
            if hashlib.sha256(path.read_bytes()).hexdigest() != output["sha256"]:
                return False
        except OSError:
            return False
    return True
