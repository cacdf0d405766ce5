"""Publishing as the command does it: build, refuse secrets, write the release into every root,
then switch every root's configs together; rolling every root back together.

Warnings (an image published with secrets it is allowed to hold) go to the `tcbuild` logger."""

from __future__ import annotations

import contextlib
import dataclasses
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
from ..tftproot.state import check_wait
from ..tftproot.writing import locked
from . import remote
from .build import BuildOptions, build
from .remote import split_roots

log = logging.getLogger("tcbuild")


Roots = Path | str | Sequence[Path | str]


@boundary
def publish(recipe: Recipe, tftp_root: Roots, build_options: BuildOptions | None = None,
            inventory: Inventory | None = None, keep: int = 5,
            bootloader_dir: Path | None = None, dry_run: bool = False, wait: float = 30.0,
            force: bool = False) -> tftp.Plan:
    """Build the recipe, check the image, and publish it into `tftp_root` (or only plan it).

    Several roots (boot servers that serve one tree) get one release: it is written into every
    root first, and the configs of any root switch to it only once every root holds it. A root
    that fails, before or during the switch, leaves every root byte for byte as it was (the
    release, the bootloader set, `boot.ipxe`, the configs); releases are pruned only once every
    root has switched. A root may be remote (`ssh://[user@]host[:port]/path`, see
    `stages.remote`): it is pushed in two phases, and a failure while switching it is reported
    with the command that finishes it.
    Returns the plan of the first root (`Plan.unchanged` when it already serves this build).
    """
    return publish_all(recipe, tftp_root, build_options, inventory, keep, bootloader_dir,
                       dry_run, wait, force)[0]


@boundary
def publish_all(recipe: Recipe, tftp_root: Roots, build_options: BuildOptions | None = None,
                inventory: Inventory | None = None, keep: int = 5,
                bootloader_dir: Path | None = None, dry_run: bool = False, wait: float = 30.0,
                force: bool = False, switch: bool = True, what: str = "publish"
                ) -> list[tftp.Plan]:
    """`publish` into one or more TFTP roots; the plan of each root, in the order given
    (local roots first, then remote ones).
    `switch=False`: the release is written into every root, no config switched (a rollout)."""
    roots, remotes = split_roots(tftp_root)
    if not roots and not remotes:
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
        far = held.enter_context(remote.sessions(remotes, wait))
        mirrors = [session.mirror for session in far]
        refuse_unfinished(mirrors, what)
        for root in sorted(roots + mirrors, key=lambda r: str(r.resolve())):  # one order
            held.enter_context(locked(root, wait))
        plans = [tftp.plan(recipe, result.kernel, result.initrd, result.build_id, root,
                           inventory, keep, bootloader, now=now, force=force)
                 for root in roots + mirrors]
        if dry_run:
            return _shown(plans, far)
        undo = [tftp.before(planned) for planned in plans]
        here, there = plans[:len(roots)], plans[len(roots):]
        try:
            for planned in plans:
                tftp.write_release(planned)
            for planned in there if switch else ():
                tftp.make_current(planned)
            pushes = remote.upload_all(far, [p.prune if switch else () for p in there])
            for planned in here if switch else ():
                tftp.make_current(planned)
        except BaseException:
            for before in undo:
                with contextlib.suppress(OSError):
                    before.restore()
            raise
        try:
            remote.switch_all(far, pushes)
        finally:
            for planned in plans:
                if switch:
                    tftp.prune(planned)
        return _shown(plans, far)


def _shown(plans: list[tftp.Plan], far: Sequence[remote.Session]) -> list[tftp.Plan]:
    """The plans of the mirrors named by their URL, with the bytes sent to each."""
    local = len(plans) - len(far)
    return plans[:local] + [dataclasses.replace(plan, where=session.remote.url,
                                                sent=session.sent)
                            for plan, session in zip(plans[local:], far, strict=True)]


@boundary
def rollback_all(tftp_roots: Roots, release: str | None = None, wait: float = 30.0
                 ) -> list[tftp.Rollback]:
    """`tftp.rollback` of several roots (boot servers of one tree) as one step: every root
    must boot the same release now and have the same one to go back to, else none changes.
    Remote roots are pushed in two phases; local ones switch between the two."""
    local, remotes = split_roots(tftp_roots)
    check_wait(wait)
    refuse_unfinished(local, "rollback")
    if len(local) == 1 and not remotes:
        return [tftp.rollback(local[0], release, wait)]
    for root in local:
        if not root.is_dir():
            raise InputError(f"{root}: the TFTP root does not exist")
    with contextlib.ExitStack() as held:
        far = held.enter_context(remote.sessions(remotes, wait))
        mirrors = [session.mirror for session in far]
        refuse_unfinished(mirrors, "rollback")
        roots = local + mirrors
        for root in sorted(roots, key=lambda r: str(r.resolve())):
            held.enter_context(locked(root, wait))
        names = {root: str(root) for root in local}
        names.update({session.mirror: session.remote.url for session in far})
        steps = {root: tftp.previous(root) if release is None
                 else (tftp.default_release(root), release) for root in roots}
        if len(set(steps.values())) > 1:
            says = "; ".join(f"{names[root]} boots {now}, would go to {to}"
                             for root, (now, to) in steps.items())
            raise InputError(f"rollback: the roots disagree ({says}); roll back each alone")
        for root in roots:  # a release missing in one root is named before any switch
            if not any(r.id == steps[root][1] for r in tftp.releases(root)):
                raise InputError(f"{names[root]}: no release {steps[root][1]}")
        done = {root: tftp.switch(root, *steps[root]) for root in mirrors}
        pushes = remote.upload_all(far)
        done.update({root: tftp.switch(root, *steps[root]) for root in local})
        remote.switch_all(far, pushes)
        return [tftp.Rollback(root, *steps[root], tuple(done[root]),
                              "" if root in local else names[root]) for root in roots]


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
