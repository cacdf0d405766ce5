"""Publishing as the command does it: build, refuse secrets, write the release into every root,
then switch every root's configs together; rolling every root back together.

Warnings (an image published with secrets it is allowed to hold) go to the `tcbuild` logger."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from ..check.secrets import find_secrets
from ..config.inventory import Inventory
from ..config.recipe import Recipe
from ..errors import InputError, TcbuildError, boundary
from ..formats.newc import iter_initramfs
from ..tftproot import releases as tftp
from ..tftproot.rollout import refuse_unfinished
from ..tftproot.state import check_wait, distinct_roots
from ..tftproot.writing import locked
from .build import BuildOptions, build

log = logging.getLogger("tcbuild")


@boundary
def publish(recipe: Recipe, tftp_root: Path | Sequence[Path],
            build_options: BuildOptions | None = None, inventory: Inventory | None = None,
            keep: int = 5, bootloader_dir: Path | None = None, dry_run: bool = False,
            wait: float = 30.0, force: bool = False) -> tftp.Plan:
    """Build the recipe, check the image, and publish it into `tftp_root` (or only plan it).

    Several roots (boot servers that serve one tree) get one release: it is written into every
    root first, and the configs of any root switch to it only once every root holds it. A root
    that fails, before or during the switch, leaves every root byte for byte as it was (the
    release, the bootloader set, `boot.ipxe`, the configs); releases are pruned only once every
    root has switched.
    Returns the plan of the first root (`Plan.unchanged` when it already serves this build).
    """
    return publish_all(recipe, tftp_root, build_options, inventory, keep, bootloader_dir,
                       dry_run, wait, force)[0]


@boundary
def publish_all(recipe: Recipe, tftp_root: Path | Sequence[Path],
                build_options: BuildOptions | None = None, inventory: Inventory | None = None,
                keep: int = 5, bootloader_dir: Path | None = None, dry_run: bool = False,
                wait: float = 30.0, force: bool = False, switch: bool = True,
                what: str = "publish") -> list[tftp.Plan]:
    """`publish` into one or more TFTP roots; the plan of each root, in the order given.
    `switch=False`: the release is written into every root, no config switched (a rollout)."""
    roots = distinct_roots([tftp_root] if isinstance(tftp_root, Path) else list(tftp_root))
    if not roots:
        raise InputError("publish: no TFTP root given")
    check_wait(wait)
    for root in roots:
        if not root.is_dir():
            raise InputError(f"{root}: the TFTP root does not exist")
    refuse_unfinished(roots, what)
    bootloader = tftp.find_bootloader(bootloader_dir)
    result = build(recipe, build_options)
    check_secrets(recipe, result.initrd)
    now = time.time()  # one release time (and so one release id) for every root
    with contextlib.ExitStack() as held:
        for root in sorted(roots, key=lambda r: str(r.resolve())):  # one order: no deadlock
            held.enter_context(locked(root, wait))
        plans = [tftp.plan(recipe, result.kernel, result.initrd, result.build_id, root,
                           inventory, keep, bootloader, now=now, force=force)
                 for root in roots]
        if dry_run:
            return plans
        undo = [tftp.before(planned) for planned in plans]
        try:
            for planned in plans:
                tftp.write_release(planned)
            for planned in plans:
                if switch:
                    tftp.make_current(planned)
        except BaseException:
            for before in undo:
                with contextlib.suppress(OSError):
                    before.restore()
            raise
        for planned in plans:
            if switch:
                tftp.prune(planned)
    return plans


@boundary
def rollback_all(roots: Sequence[Path], release: str | None = None, wait: float = 30.0
                 ) -> list[tftp.Rollback]:
    """`tftp.rollback` of several roots (boot servers of one tree) as one step: every root
    must boot the same release now and have the same one to go back to, else none changes."""
    roots = distinct_roots(roots)
    check_wait(wait)
    refuse_unfinished(roots, "rollback")
    if len(roots) == 1:
        return [tftp.rollback(roots[0], release, wait)]
    for root in roots:
        if not root.is_dir():
            raise InputError(f"{root}: the TFTP root does not exist")
    with contextlib.ExitStack() as held:
        for root in sorted(roots, key=lambda r: str(r.resolve())):
            held.enter_context(locked(root, wait))
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
