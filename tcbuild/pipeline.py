"""The orchestration: build -> checks -> publish, build -> ISO, and the files the commands write.

The floors below each do one job (fetch, build, the TFTP tree, the ISO writer); this module strings
them together, so a reader following a recipe to a published file goes down once. Every function
here is what one command calls; warnings (an image published with secrets it is allowed to hold, a
dependency cycle) go to the `tcbuild` logger, never into return values.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import tftp
from .atomic import publish_files
from .build import BuildOptions, BuildResult, build, default_out_dir, source_date_epoch
from .errors import InputError, TcbuildError, boundary
from .fetch import fetch
from .inputs import FetchOptions, Inputs
from .inventory import Inventory
from .lockfile import lock_path, lock_text
from .manifest import MANIFEST, read_manifest
from .newc import iter_initramfs
from .recipe import Recipe
from .secrets import find_secrets
from .server import Dhcp, server_files

log = logging.getLogger("tcbuild")


@dataclass(frozen=True)
class IsoResult:
    """A written ISO and the build it holds."""

    path: Path
    size: int
    sha256: str
    volume_id: str
    build: BuildResult
    seconds: float  # planning and writing the ISO (the build not included)

    def as_json(self) -> dict[str, object]:
        """The result as JSON-ready data (`tcbuild iso --json`)."""
        built = self.build
        return {"iso": str(self.path), "size": self.size, "sha256": self.sha256,
                "volume_id": self.volume_id, "seconds": round(self.seconds, 3),
                "build": {"out_dir": str(built.out_dir), "build_id": built.build_id,
                          "up_to_date": built.up_to_date, "seconds": round(built.seconds, 3)}}


@boundary
def publish(recipe: Recipe, tftp_root: Path | Sequence[Path],
            build_options: BuildOptions | None = None, inventory: Inventory | None = None,
            keep: int = 5, bootloader_dir: Path | None = None, dry_run: bool = False,
            wait: float = 30.0, force: bool = False) -> tftp.Plan:
    """Build the recipe, check the image, and publish it into `tftp_root` (or only plan it).

    Several roots (boot servers that serve one tree) get one release: it is written into every
    root first, and the configs of any root switch to it only once every root holds it. A root
    that fails before the switch leaves every root booting what it booted before.
    Returns the plan of the first root (`Plan.unchanged` when it already serves this build).
    """
    return publish_all(recipe, tftp_root, build_options, inventory, keep, bootloader_dir,
                       dry_run, wait, force)[0]


@boundary
def publish_all(recipe: Recipe, tftp_root: Path | Sequence[Path],
                build_options: BuildOptions | None = None, inventory: Inventory | None = None,
                keep: int = 5, bootloader_dir: Path | None = None, dry_run: bool = False,
                wait: float = 30.0, force: bool = False) -> list[tftp.Plan]:
    """`publish` into one or more TFTP roots; the plan of each root, in the order given."""
    roots = [tftp_root] if isinstance(tftp_root, Path) else list(tftp_root)
    if not roots:
        raise InputError("publish: no TFTP root given")
    if len({root.resolve() for root in roots}) != len(roots):
        raise InputError(f"{roots[0]}: a TFTP root is named twice")
    for root in roots:
        if not root.is_dir():
            raise InputError(f"{root}: the TFTP root does not exist")
    bootloader = tftp.find_bootloader(bootloader_dir)
    result = build(recipe, build_options)
    check_secrets(recipe, result.initrd)
    now = time.time()  # one release time (and so one release id) for every root
    with contextlib.ExitStack() as held:
        for root in sorted(roots, key=lambda r: str(r.resolve())):  # one order: no deadlock
            held.enter_context(tftp.locked(root, wait))
        plans = [tftp.plan(recipe, result.kernel, result.initrd, result.build_id, root,
                           inventory, keep, bootloader, now=now, force=force)
                 for root in roots]
        if dry_run:
            return plans
        written: list[tftp.Plan] = []
        try:
            for planned in plans:
                written.append(planned)
                tftp.write_release(planned)
        except BaseException:
            for planned in written:
                with contextlib.suppress(OSError):
                    tftp.discard_release(planned)
            raise
        for planned in plans:
            tftp.make_current(planned)
    return plans


@boundary
def rollback_all(roots: Sequence[Path], release: str | None = None, wait: float = 30.0
                 ) -> list[tftp.Rollback]:
    """`tftp.rollback` of several roots (boot servers of one tree) as one step: every root
    must boot the same release now and have the same one to go back to, else none changes."""
    if len(roots) == 1:
        return [tftp.rollback(roots[0], release, wait)]
    for root in roots:
        if not root.is_dir():
            raise InputError(f"{root}: the TFTP root does not exist")
    with contextlib.ExitStack() as held:
        for root in sorted(roots, key=lambda r: str(r.resolve())):
            held.enter_context(tftp.locked(root, wait))
        steps = {root: tftp.previous(root) if release is None
                 else (tftp.default_release(root), release) for root in roots}
        if len(set(steps.values())) > 1:
            says = "; ".join(f"{root} boots {now}, would go to {to}"
                             for root, (now, to) in steps.items())
            raise InputError(f"rollback: the roots disagree ({says}); roll back each alone")
        for root in roots:  # a release missing in one root is named before any switch
            if not any(r.id == steps[root][1] for r in tftp.releases(root)):
                raise InputError(f"{root}: no release {steps[root][1]}")
        return [tftp.Rollback(root, now, to, tuple(tftp.switch(root, now, to)))
                for root, (now, to) in steps.items()]


def check_secrets(recipe: Recipe, initrd: Path) -> None:
    """Refuse an image that holds secrets, unless the recipe allows them: then each is logged as
    a warning."""
    marked = [path for path, attributes in recipe.files.items() if attributes.secret]
    found = [f"{initrd}: {line}" for line in find_secrets(iter_initramfs(initrd), marked)]
    if found and not recipe.allow_secrets:
        raise TcbuildError("\n".join(
            f"{line}; TFTP would serve it to anyone (set [image] allow_secrets = true to "
            "publish anyway)" for line in found))
    for line in found:
        log.warning("%s; published anyway (allow_secrets)", line)


@boundary
def build_iso(recipe: Recipe, output: Path | None = None, options: BuildOptions | None = None,
              isolinux_dir: Path | None = None) -> IsoResult:
    """Build the recipe (a no-op when up to date), then write its ISO.

    The default `output` is `<build directory>/<recipe name>.iso`. The image's time is
    SOURCE_DATE_EPOCH when set, else the newest entry of the image (as the build's own).
    """
    from . import iso  # pycdlib is loaded only to write an ISO

    if output is not None:
        _check_iso_output(recipe, output, options)
    isolinux = iso.find_isolinux(isolinux_dir)  # before a build that would be for nothing
    efi = iso.find_efi_loader(isolinux_dir)
    result = build(recipe, options)
    started = time.monotonic()
    target = output or result.out_dir / f"{recipe.name}.iso"
    plan = iso.plan_iso(recipe, result.kernel, result.initrd,
                        epoch=image_epoch(result.out_dir), isolinux=isolinux, efi=efi)
    iso.write_iso(plan, target)
    return IsoResult(target, target.stat().st_size, iso.file_sha256(target), plan.volume_id,
                     result, time.monotonic() - started)


def _check_iso_output(recipe: Recipe, output: Path, options: BuildOptions | None) -> None:
    """The ISO may not be written over the build's outputs, the recipe or its lock file."""
    out = (options.out_dir if options else None) or default_out_dir(recipe)
    taken = {out / recipe.flavor.kernel: "the build's kernel",
             out / recipe.initrd_name: "the build's initrd", out / MANIFEST: "the build's manifest",
             recipe.path: "the recipe", lock_path(recipe): "the recipe's lock file"}
    clash = next((what for path, what in taken.items() if path.resolve() == output.resolve()),
                 None)
    if clash:
        raise InputError(f"{output}: the ISO would overwrite {clash}")


def image_epoch(out_dir: Path) -> int:
    """SOURCE_DATE_EPOCH, else the newest mtime among the build's entries (0 when unknown)."""
    epoch = source_date_epoch()
    if epoch is not None:
        return epoch
    manifest = read_manifest(out_dir)
    entries = manifest.entries if manifest is not None else ()
    return max((int(e["mtime"]) for e in entries), default=0)


@boundary
def lock(recipe: Recipe, options: FetchOptions | None = None) -> tuple[Path, Inputs]:
    """Fetch the recipe's inputs afresh (ignoring its lock file) and write `RECIPE.lock`."""
    inputs = fetch(recipe, replace(options or FetchOptions(), lock=None, locked=False,
                                   lock_file=False))
    path = lock_path(recipe)
    publish_files(path.parent, {path.name: lock_text(recipe, inputs.used).encode()})
    return path, inputs


@boundary
def write_server_config(inventory: Inventory, out: Path,
                        dhcp: Collection[Dhcp] = tuple(Dhcp)) -> list[Path]:
    """Write the boot server's files (`server.server_files`) into `out`, each whole; their paths."""
    files = server_files(inventory, dhcp)
    publish_files(out, {name: text.encode() for name, text in files.items()})
    return [out / name for name in files]


@boundary
def check_server_config(inventory: Inventory, out: Path, dhcp: Collection[Dhcp] = tuple(Dhcp)
                        ) -> dict[str, list[str]]:
    """Compare the boot server's files with those in `out`, writing nothing: file name -> a
    unified diff from the installed file (or /dev/null) to the generated one, empty if equal."""
    diffs = {}
    for name, text in server_files(inventory, dhcp).items():
        target = out / name
        try:
            installed: str | None = target.read_text()
        except FileNotFoundError:
            installed = None
        old = [] if installed is None else installed.splitlines(keepends=True)
        diffs[name] = [] if installed == text else list(difflib.unified_diff(
            old, text.splitlines(keepends=True),
            str(target) if installed is not None else "/dev/null", f"{target} (generated)"))
    return diffs
