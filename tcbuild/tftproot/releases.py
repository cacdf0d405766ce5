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
    tcbuild/history.json                  what each config booted before (for rollback)
    tcbuild/bootloader.json               the bootloader set's checksums
A release is complete and fsynced before any config names it, and no release a config boots
or would roll back to is pruned, so a node that PXE-boots during a publish gets the old image
or the new one, never a mix. One publish or rollback at a time holds `tcbuild/.lock`.
Every directory made is 0755 and every file 0644, whatever the umask: the TFTP server reads
them as another user.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..atomic import fsync_dir, write_bytes
from ..boot import ipxe, syslinux
from ..boot.bootfile import IPXE_SCRIPT
from ..boot.pxelinux import CONFIG_DIR, Label, PxeConfig, for_recipe, mac_config_name, render
from ..config import discovery
from ..config.inventory import Inventory
from ..config.recipe import RELEASE_JSON, Recipe
from ..errors import InputError, boundary
from .state import (
    BOOTLOADER,
    HISTORIES,
    HISTORY,
    RELEASES,
    Checksum,
    History,
    Release,
    booting,
    configs,
    current,
    current_of,
    file_sha256,
    legacy_histories,
    read_config,
    read_histories,
    release_of,
    releases,
    scripts,
)
from .verify import verify
from .writing import (
    Before,
    history_for,
    install_bootloader,
    locked,
    mkdirs,
    own,
    snapshot,
    switch_configs,
    twins,
)

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
    where: str = ""  # the root as the operator named it, when `tftp` is its local mirror
    sent: int | None = None  # a remote root: the bytes rsync sent to it
    # the configs as the plan read them: `make_current` switches from these (the lock held
    # from `plan` to `make_current`, as `execute` and `stages.publish` hold it)
    found: Mapping[str, PxeConfig] | None = field(default=None, compare=False, repr=False)

    @property
    def shown(self) -> str:
        """The root as the operator named it."""
        return self.where or str(self.tftp)

    def as_json(self) -> dict[str, object]:
        """The plan as JSON-ready data (`tcbuild publish --json`)."""
        found: dict[str, object] = {
            "tftp": self.shown, "release": self.release_id, "unchanged": self.unchanged,
            "files": sorted(self.files), "configs": sorted(self.configs),
            "retire": list(self.retire), "prune": list(self.prune)}
        return found if self.sent is None else {**found, "sent_bytes": self.sent}

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
    where: str = ""  # the root as the operator named it, when `tftp` is its local mirror

    @property
    def shown(self) -> str:
        return self.where or str(self.tftp)

    SHOWN = 5  # configs named in `describe`; past these, a count and the first few

    def describe(self) -> str:
        """One line: the configs switched (a count past a few names) and the releases."""
        names = self.configs
        if len(names) <= self.SHOWN:
            which = ", ".join(names)
        else:
            which = f"{len(names)} configs ({', '.join(names[:3])}, ...)"
        verb = "boots" if len(names) == 1 else "boot"
        return f"{self.shown}: {which} now {verb} {self.now} (was {self.was})"


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
    found, known = configs(tftp), releases(tftp)  # each config read once for the whole plan
    used = current_of(found, scripts(tftp))
    retire = () if inventory is None else _retired(recipe, set(served), known, used)
    bootloader = bootloader or find_bootloader()
    same = None if force or retire else _serving(tftp, release, served, recipe, bootloader)
    if same is not None:
        return Plan(tftp, same.id, {}, same, {}, {}, (), unchanged=True)
    rendered = {name: _config_for(release, append, recipe) for name, append in served.items()}
    prune = _prunable(tftp, keep, release_id, set(rendered), set(retire), known, used, found)
    return Plan(tftp, release_id, files, release, rendered, bootloader, prune, retire=retire,
                found=found)


def _retired(recipe: Recipe, served: set[str], known: list[Release],
             used: dict[str, set[str]]) -> tuple[str, ...]:
    """The per-MAC configs this recipe wrote that it no longer serves (the host left the
    inventory or its group). A config belongs to the recipe that published the release it
    boots (`release.json`'s `recipe`); those of other recipes are never touched."""
    mine = str(recipe.path.resolve())
    ours = {r.id for r in known if r.recipe == mine}
    names = {name for rid, using in used.items() if rid in ours for name in using}
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
        scripts = twins(wanted)
        if all(_read_text(tftp / CONFIG_DIR / name) == text for name, text in wanted.items()) \
                and all(_read_text(tftp / path) == text for path, text in scripts.items()):
            return candidate
    return None


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


def _prunable(tftp: Path, keep: int, new_id: str, switching: set[str], retiring: set[str],
              known: list[Release], used: dict[str, set[str]],
              found: Mapping[str, PxeConfig]) -> tuple[str, ...]:
    """Old releases beyond `keep`, never one a config boots or would roll back to once the
    configs in `switching` boot `new_id` (for those, what they boot now) and those in
    `retiring` are gone."""
    exists = {r.id for r in known}
    protected = {rid for rid, using in used.items() if using - retiring}
    histories, leaving = read_histories(tftp), switching | retiring  # (one set, not one a config)
    for name, config in found.items():
        if name in leaving:
            continue
        back = histories.get(name, History(name)).upto(booting(config)).back(exists)
        if back is not None:
            protected.add(back)
    ids = [r.id for r in known] + [new_id]
    surplus = ids[: max(0, len(ids) - keep)]
    return tuple(rid for rid in surplus if rid not in protected and rid != new_id)


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
    folded = [f"{HISTORY}/{path.name}" for path in legacy_histories(plan.tftp).values()]
    files = [*plan.bootloader, IPXE_ENTRY,
             *(rel for name in names for rel in (f"{CONFIG_DIR}/{name}", ipxe.script_path(name))),
             HISTORIES, *folded, BOOTLOADER]
    dirs = ["tcbuild", RELEASES, CONFIG_DIR, ipxe.SCRIPT_DIR]
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
    mkdirs(releases_dir, tftp, owner)
    for leftover in releases_dir.glob(".*.partial"):  # of a publish killed mid-way
        shutil.rmtree(leftover, ignore_errors=True)
    staging = releases_dir / f".{plan.release_id}.partial"
    staging.mkdir(mode=0o755)
    try:
        for name, source in plan.files.items():
            write_bytes(staging / name, source.read_bytes(), owner=owner)
        write_bytes(staging / RELEASE_JSON, plan.release.text(), owner=owner)
        own(staging, owner, 0o755)
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
    found = plan.found if plan.found is not None else configs(tftp)
    exists = {r.id for r in releases(tftp)}
    known = read_histories(tftp)
    switch_configs(tftp, {name: (text, history_for(tftp, name, found.get(name), plan.release_id,
                                                 exists, known))
                           for name, text in plan.configs.items()}, owner, plan.retire, known)


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


def switch(tftp: Path, from_id: str, to_id: str) -> list[str]:
    """Point every config that boots `from_id` at `to_id` instead (rollback); the names changed.
    Call with the lock held."""
    found = releases(tftp)
    target = next((r for r in found if r.id == to_id), None)
    if target is None:
        raise InputError(f"{tftp}: no release {to_id}")
    exists = {r.id for r in found}
    known = read_histories(tftp)
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
            changes[name] = (text, history_for(tftp, name, config, to_id, exists, known))
    switch_configs(tftp, changes, tftp.stat(), known=known)
    return list(changes)


def default_release(tftp: Path) -> str:
    """The release `pxelinux.cfg/default` boots."""
    config = read_config(tftp, "default")
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


