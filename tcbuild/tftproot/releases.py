"""A TFTP root: versioned releases, an atomic switch, rollback, verification.

Layout (nothing else in the TFTP root is touched; the state files are in `tftpstate`):
    pxelinux.0, ldlinux.c32               the BIOS network bootloader, copied from syslinux
    bootx64.efi, ldlinux.e64              the x64 UEFI one (syslinux.efi), reading pxelinux.cfg/
                                          (the bootloader files are replaced as one set)
    boot.ipxe                             the HTTP entry point (tcbuild.ipxe)
    pxelinux.cfg/default, 01-<mac>        written beside themselves and renamed into place
                                          (a 01-<mac> the inventory no longer asks for is
                                          removed by the recipe whose release it boots)
    pxelinux.cfg/discovery                `default` in report mode, for machines the
                                          inventory does not know (with its `discovery` range)
    ipxe/default.ipxe, 01-<mac>.ipxe      their twins for HTTP boot, written with them
    tcbuild/releases/<time>-<build>/      kernel, initrd and release.json (their checksums)
    tcbuild/history/<config>.json         what each config booted before (for rollback)
    tcbuild/bootloader.json               the bootloader set's checksums
A release is complete and fsynced before any config names it, and no release a config boots
or would roll back to is pruned, so a node that PXE-boots during a publish gets the old image
or the new one, never a mix. One publish or rollback at a time holds `tcbuild/.lock`.
Every directory made is 0755 and every file 0644, whatever the umask: the TFTP server reads
them as another user.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..atomic import fsync_dir, write_all, write_bytes
from ..boot import ipxe, syslinux
from ..boot.bootfile import IPXE_SCRIPT
from ..boot.pxelinux import CONFIG_DIR, Label, PxeConfig, for_recipe, mac_config_name, parse, render
from ..config import discovery
from ..config.inventory import Inventory
from ..config.recipe import RELEASE_JSON, Recipe
from ..errors import InputError, TcbuildError, boundary
from .state import (
    BOOTLOADER,
    HISTORY,
    RELEASES,
    Before,
    Checksum,
    History,
    Release,
    booting,
    check_wait,
    configs,
    current,
    file_sha256,
    history_path,
    read_bootsets,
    release_of,
    releases,
    snapshot,
    write_bootsets,
)
from .verify import verify

LOCK = "tcbuild/.lock"
_MAC_PREFIX = mac_config_name("00:00:00:00:00:00")[:3]  # "01-"
IPXE_ENTRY = IPXE_SCRIPT
__all__ = ["RELEASES", "Release", "configs", "current", "release_of", "releases", "verify"]


@dataclass(frozen=True)
class Plan:
    """What a publish will do; `describe` shows it for `--dry-run`."""

    tftp: Path
    release_id: str
    files: dict[str, Path]  # name in the release -> source
    release: Release
    configs: dict[str, str]  # name in pxelinux.cfg -> content
    bootloader: dict[str, Path]
    prune: tuple[str, ...]
    unchanged: bool = False  # the build is already published and current: nothing to do
    retire: tuple[str, ...] = ()  # per-MAC configs (and twins) removed in the switch

    def as_json(self) -> dict[str, object]:
        """The plan as JSON-ready data (`tcbuild publish --json`)."""
        return {"tftp": str(self.tftp), "release": self.release_id, "unchanged": self.unchanged,
                "files": sorted(self.files), "configs": sorted(self.configs),
                "retire": list(self.retire), "prune": list(self.prune)}

    def describe(self) -> list[str]:
        if self.unchanged:
            return [f"release {RELEASES}/{self.release_id}/ is already published and current: "
                    "nothing to do"]
        lines = [f"new release {RELEASES}/{self.release_id}/"]
        lines += [f"  {name} ({self.release.files[name].size} bytes)" for name in self.files]
        for name, content in self.configs.items():
            target = self.tftp / CONFIG_DIR / name
            old = target.read_bytes() if target.is_file() else None  # any bytes: no decoding
            state = "unchanged" if old == content.encode() else ("replace" if old else "create")
            lines.append(f"{CONFIG_DIR}/{name}: {state}")
        for name, source in self.bootloader.items():
            lines.append(f"{name}: from {source}")
        lines += [f"{ipxe.script_path(name)}: the twin of {CONFIG_DIR}/{name}"
                  for name in self.configs]
        lines += [f"{CONFIG_DIR}/{name}: remove (no host of the inventory asks for it), with "
                  f"{ipxe.script_path(name)}" for name in self.retire]
        lines += [f"prune {RELEASES}/{rid}/" for rid in self.prune]
        return lines


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the configs that boot `now` instead of `was`."""

    tftp: Path
    was: str
    now: str
    configs: tuple[str, ...]


def find_bootloader(directory: Path | None = None) -> dict[str, Path]:
    """The BIOS and UEFI network bootloaders from `directory`, or Debian's usual places."""
    return syslinux.find(syslinux.PXE, directory)


def _config_for(release: Release, append: str | None, recipe: Recipe) -> str:
    where = f"{RELEASES}/{release.id}"
    config = for_recipe(recipe, f"{where}/{release.kernel}", f"{where}/{release.initrd}", append)
    return render(config, f"Generated by tcbuild: release {release.id} of {release.recipe}.")


def plan(recipe: Recipe, kernel: Path, initrd: Path, build_id: str, tftp: Path,
         inventory: Inventory | None = None, keep: int = 5,
         bootloader: dict[str, Path] | None = None, now: float | None = None,
         force: bool = False) -> Plan:
    """The release to write, the configs that will name it, the releases to prune. No writes.

    When the tree already serves this build with these configs, nothing (unless `force`).
    """
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    release_id = base = f"{stamp:%Y%m%dT%H%M%SZ}-{build_id[:12]}"
    n = 1
    while (tftp / RELEASES / release_id).exists():  # the same build twice in one second
        n += 1
        release_id = f"{base}.{n}"
    files = {kernel.name: kernel, initrd.name: initrd}
    release = Release(
        release_id, tftp / RELEASES / release_id, str(recipe.path.resolve()), recipe.name,
        build_id, stamp, kernel.name, initrd.name,
        {name: Checksum(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
         for name, p in files.items()})
    served = _configs_served(recipe, inventory)
    retire = () if inventory is None else _retired(tftp, recipe, set(served))
    bootloader = bootloader or find_bootloader()
    same = None if force or retire else _serving(tftp, release, served, recipe, bootloader)
    if same is not None:
        return Plan(tftp, same.id, {}, same, {}, {}, (), unchanged=True)
    rendered = {name: _config_for(release, append, recipe) for name, append in served.items()}
    return Plan(tftp, release_id, files, release, rendered, bootloader,
                _prunable(tftp, keep, release_id, set(rendered), set(retire)), retire=retire)


def _retired(tftp: Path, recipe: Recipe, served: set[str]) -> tuple[str, ...]:
    """The per-MAC configs this recipe wrote that it no longer serves (the host left the
    inventory or its group). A config belongs to the recipe that published the release it
    boots (`release.json`'s `recipe`); those of other recipes are never touched."""
    mine = str(recipe.path.resolve())
    ours = {r.id for r in releases(tftp) if r.recipe == mine}
    names = {name for rid, using in current(tftp).items() if rid in ours for name in using}
    return tuple(sorted(name for name in names
                        if (name.startswith(_MAC_PREFIX) or name == discovery.CONFIG)
                        and name not in served))


def _serving(tftp: Path, release: Release, served: dict[str, str | None], recipe: Recipe,
             bootloader: dict[str, Path]) -> Release | None:
    """The release that already serves exactly this publish (same files, configs, bootloader),
    whichever recipe file or directory published it."""
    if any(file_sha256(tftp / name) != file_sha256(source) for name, source in bootloader.items()):
        return None
    if _read_text(tftp / IPXE_ENTRY) != ipxe.ENTRY:
        return None
    for candidate in reversed(releases(tftp)):
        if candidate.files != release.files:
            continue
        wanted = {name: _config_for(candidate, append, recipe) for name, append in served.items()}
        twins = _twins(wanted)
        if all(_read_text(tftp / CONFIG_DIR / name) == text for name, text in wanted.items()) \
                and all(_read_text(tftp / path) == text for path, text in twins.items()):
            return candidate
    return None


def _twins(rendered: dict[str, str]) -> dict[str, str]:
    """The iPXE twin of each rendered pxelinux config, by path relative to the root."""
    return ipxe.scripts({name: parse(text, f"{CONFIG_DIR}/{name}")
                         for name, text in rendered.items()})


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _configs_served(recipe: Recipe, inventory: Inventory | None) -> dict[str, str | None]:
    """Config file -> boot line (None: the recipe's) for the configs this recipe boots.

    The default recipe owns `default` and the hosts of groups that only change the boot line,
    and `discovery` when the inventory has a discovery range (`default` with the report-mode
    argument); a group's own recipe owns its hosts' per-MAC files and nothing else.
    """
    if inventory is None:
        return {"default": None}
    mine = recipe.path.resolve()
    group_recipes = {g.recipe.resolve() for g in inventory.groups.values() if g.recipe}
    is_default = mine not in group_recipes
    served: dict[str, str | None] = {"default": None} if is_default else {}
    if is_default and inventory.cluster.discovery is not None:
        served[discovery.CONFIG] = " ".join(filter(None, (recipe.append, discovery.KERNEL_ARG)))
    for host in inventory.hosts:
        group = inventory.groups.get(host.group) if host.group else None
        if group is None:
            continue
        if group.recipe is not None:
            if group.recipe.resolve() == mine:
                served[mac_config_name(host.mac)] = group.append
        elif is_default:
            served[mac_config_name(host.mac)] = group.append
    return served


def _prunable(tftp: Path, keep: int, new_id: str, switching: set[str],
              retiring: set[str]) -> tuple[str, ...]:
    """Old releases beyond `keep`, never one a config boots or would roll back to once the
    configs in `switching` boot `new_id` (for those, what they boot now) and those in
    `retiring` are gone."""
    found = releases(tftp)
    exists = {r.id for r in found}
    protected = {rid for rid, using in current(tftp).items() if using - retiring}
    for name, config in configs(tftp).items():
        back = History.read(tftp, name).upto(booting(config)).back(exists)
        if back is not None and name not in switching | retiring:
            protected.add(back)
    ids = [r.id for r in found] + [new_id]
    surplus = ids[: max(0, len(ids) - keep)]
    return tuple(rid for rid in surplus if rid not in protected and rid != new_id)


@contextlib.contextmanager
def locked(tftp: Path, wait: float = 30.0) -> Iterator[None]:
    """Hold the TFTP root's publish lock, waiting up to `wait` seconds for another holder."""
    check_wait(wait)
    lock = tftp / LOCK
    _mkdirs(lock.parent, tftp, tftp.stat())
    with lock.open("a") as f:
        if os.fstat(f.fileno()).st_uid == os.geteuid():
            os.fchmod(f.fileno(), 0o644)  # like every file of the tree, whatever the umask
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TcbuildError(f"{lock}: another publish is running (waited "
                                       f"{wait:.0f} s)") from None
                time.sleep(0.1)
        yield


def execute(plan: Plan) -> None:
    """Write the release, the bootloader set, switch the configs to the release, prune. Call
    with the lock held."""
    write_release(plan)
    make_current(plan)
    prune(plan)


def before(plan: Plan) -> Before:
    """Everything `write_release` and `make_current` may change, as it is now: its `restore`
    leaves the root byte-identical to now (a multi-root publish that fails in one root)."""
    names = [*plan.configs, *plan.retire]
    files = [*plan.bootloader, IPXE_ENTRY,
             *(rel for name in names for rel in (f"{CONFIG_DIR}/{name}", ipxe.script_path(name),
                                                 str(history_path(Path(), name)))),
             BOOTLOADER]
    dirs = ["tcbuild", RELEASES, HISTORY, CONFIG_DIR, ipxe.SCRIPT_DIR]
    return snapshot(plan.tftp, plan.tftp / RELEASES / plan.release_id,
                    files if not plan.unchanged else [], dirs if not plan.unchanged else [])


def write_release(plan: Plan) -> None:
    """The first half of `execute`: the release and the bootloader set, no config switched yet
    (what boots is unchanged). Call with the lock held."""
    tftp = plan.tftp
    if plan.unchanged:
        return
    if not tftp.is_dir():
        raise InputError(f"{tftp}: the TFTP root does not exist")
    owner = tftp.stat()
    releases_dir = tftp / RELEASES
    _mkdirs(releases_dir, tftp, owner)
    for leftover in releases_dir.glob(".*.partial"):  # of a publish killed mid-way
        shutil.rmtree(leftover, ignore_errors=True)
    staging = releases_dir / f".{plan.release_id}.partial"
    staging.mkdir(mode=0o755)
    try:
        for name, source in plan.files.items():
            write_bytes(staging / name, source.read_bytes(), owner=owner)
        write_bytes(staging / RELEASE_JSON, plan.release.text(), owner=owner)
        _own(staging, owner, 0o755)
        staging.replace(releases_dir / plan.release_id)
        fsync_dir(releases_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    install_bootloader(tftp, plan.bootloader, owner)
    if _read_text(tftp / IPXE_ENTRY) != ipxe.ENTRY:
        write_bytes(tftp / IPXE_ENTRY, ipxe.ENTRY.encode(), owner=owner)


def make_current(plan: Plan) -> None:
    """The second half of `execute`: switch the configs to the written release and remove
    the per-MAC configs it retires, in one row."""
    tftp = plan.tftp
    if plan.unchanged:
        return
    owner = tftp.stat()
    found = configs(tftp)
    exists = {r.id for r in releases(tftp)}
    _switch_configs(tftp, {name: (text, _history(tftp, name, found.get(name), plan.release_id,
                                                 exists))
                           for name, text in plan.configs.items()}, owner, plan.retire)


def prune(plan: Plan) -> None:
    """The last step of `execute`: remove the releases the plan prunes."""
    if plan.unchanged:
        return
    releases_dir = plan.tftp / RELEASES
    for rid in plan.prune:  # out of the listing by one rename, then removed
        doomed = releases_dir / f".{rid}.partial"
        with contextlib.suppress(FileNotFoundError):
            (releases_dir / rid).replace(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def install_bootloader(tftp: Path, files: dict[str, Path], owner: os.stat_result) -> None:
    """Replace the bootloader files as one set: the record names the old and the new set
    while the files change, then the new set alone (see `tftpstate`)."""
    new = {name: hashlib.sha256(source.read_bytes()).hexdigest()
           for name, source in files.items()}
    recorded = read_bootsets(tftp)
    names = {name for s in [new, *recorded] for name in s}
    present = {name: digest for name in names if (digest := file_sha256(tftp / name))}
    if recorded == [new] and all(present.get(n) == d for n, d in new.items()):
        return
    _mkdirs((tftp / BOOTLOADER).parent, tftp, owner)
    # the set the files are now: a recorded one they match, or (none recorded) what is there
    old = next((s for s in recorded if all(present.get(n) == d for n, d in s.items())),
               None if recorded else present)
    write_bootsets(tftp, [old, new] if old and old != new else [new], owner)
    for name, source in files.items():
        if file_sha256(tftp / name) != new[name]:
            write_bytes(tftp / name, source.read_bytes(), owner=owner)
    write_bootsets(tftp, [new], owner)


def _history(tftp: Path, name: str, config: PxeConfig | None, target: str,
             exists: set[str]) -> History:
    """A config's history once it boots `target` (`config`: what it is now, if anything)."""
    now = booting(config) if config is not None else None
    return History.read(tftp, name).upto(now).switched(target, exists)


def _switch_configs(tftp: Path, changes: dict[str, tuple[str, History]],
                    owner: os.stat_result, retire: tuple[str, ...] = ()) -> None:
    """The configs switched together: every file written first, then each config's history and
    iPXE twin renamed just before it, all in a row (a node booting meanwhile finds the configs
    as they were, or as they are now, but for the moment between two renames); then each
    retired config removed, its twin and history after it (a kill in between leaves a twin
    that still names its release, retired by the next publish)."""
    twins = _twins({name: text for name, (text, _) in changes.items()})
    for directory in (CONFIG_DIR, ipxe.SCRIPT_DIR, HISTORY):
        _mkdirs(tftp / directory, tftp, owner)
    files: list[tuple[Path, bytes]] = []
    for (name, (text, history)), (path, script) in zip(changes.items(), twins.items(),
                                                       strict=True):
        files += [(history_path(tftp, name), history.text()), (tftp / path, script.encode()),
                  (tftp / CONFIG_DIR / name, text.encode())]
    write_all(files, owner=owner)
    for name in retire:
        for gone in (tftp / CONFIG_DIR / name, tftp / ipxe.script_path(name),
                     history_path(tftp, name)):
            gone.unlink(missing_ok=True)
            fsync_dir(gone.parent)


def switch(tftp: Path, from_id: str, to_id: str) -> list[str]:
    """Point every config that boots `from_id` at `to_id` instead (rollback); the names changed.
    Call with the lock held."""
    found = releases(tftp)
    target = next((r for r in found if r.id == to_id), None)
    if target is None:
        raise InputError(f"{tftp}: no release {to_id}")
    exists = {r.id for r in found}
    changes = {}
    for name, config in configs(tftp).items():
        labels = tuple(
            Label(label.name, f"{RELEASES}/{to_id}/{target.kernel}",
                  f"{RELEASES}/{to_id}/{target.initrd}", label.append)
            if release_of(label.kernel) == from_id else label for label in config.labels)
        if labels != config.labels:
            new = PxeConfig(config.default, labels, config.serial, config.timeout, config.prompt)
            text = render(new, f"Generated by tcbuild: release {to_id} of "
                               f"{target.recipe} (rolled back from {from_id}).")
            changes[name] = (text, _history(tftp, name, config, to_id, exists))
    _switch_configs(tftp, changes, tftp.stat())
    return list(changes)


def default_release(tftp: Path) -> str:
    """The release `pxelinux.cfg/default` boots."""
    config = configs(tftp).get("default")
    now = booting(config) if config is not None else None
    if now is None:
        raise InputError(f"{tftp}: {CONFIG_DIR}/default boots no tcbuild release")
    return now


def previous(tftp: Path) -> tuple[str, str]:
    """(current, previous) release ids of `default`: what it boots, and what it booted before
    (the latest such release still in the tree), whoever published them."""
    now = default_release(tftp)
    exists = {r.id for r in releases(tftp)}
    back = History.read(tftp, "default").upto(now).back(exists)
    if back is None:
        raise InputError(f"{tftp}: no release before {now} to roll back to")
    return now, back


@boundary
def rollback(tftp: Path, release: str | None = None, wait: float = 30.0) -> Rollback:
    """Boot what `default` booted before (or `release`) again: every config that boots what
    `default` boots now switches. Each call steps one release further back."""
    if not tftp.is_dir():
        raise InputError(f"{tftp}: the TFTP root does not exist")
    with locked(tftp, wait):
        now, target = previous(tftp) if release is None else (default_release(tftp), release)
        changed = switch(tftp, now, target)
    return Rollback(tftp, now, target, tuple(changed))


def _own(path: Path, owner: os.stat_result, mode: int) -> None:
    path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, owner.st_uid, owner.st_gid)


def _mkdirs(path: Path, root: Path, owner: os.stat_result) -> None:
    for parent in reversed([path, *path.parents]):
        if parent == root or not parent.is_relative_to(root) or parent.is_dir():
            continue
        parent.mkdir(mode=0o755)
        _own(parent, owner, 0o755)


def put_configs(tftp: Path, texts: dict[str, str]) -> None:
    """Write pxelinux configs (each text rendered by tcbuild, booting a release) with their
    iPXE twins and histories, switched together (a rollout's per-MAC configs). Call with the
    lock held."""
    found = configs(tftp)
    exists = {r.id for r in releases(tftp)}
    changes = {}
    for name, text in texts.items():
        target = booting(parse(text, f"{CONFIG_DIR}/{name}"))
        if target is None:
            raise InputError(f"{CONFIG_DIR}/{name}: the new text boots no tcbuild release")
        changes[name] = (text, _history(tftp, name, found.get(name), target, exists))
    _switch_configs(tftp, changes, tftp.stat())


def drop_configs(tftp: Path, names: list[str]) -> None:
    """Remove per-MAC configs (and their iPXE twins): their hosts boot `default` again. The
    twin goes first, then the config, each removal made durable. Call with the lock held."""
    for name in names:
        if name == "default":
            raise InputError(f"{CONFIG_DIR}/default: never dropped")
        for path in (tftp / ipxe.script_path(name), tftp / CONFIG_DIR / name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                fsync_dir(path.parent)
