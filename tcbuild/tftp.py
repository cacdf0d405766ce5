"""A TFTP root: versioned releases, an atomic switch, rollback, verification.

Layout (nothing else in the TFTP root is touched):
    pxelinux.0, ldlinux.c32               the BIOS network bootloader, copied from syslinux
    bootx64.efi, ldlinux.e64              the x64 UEFI one (syslinux.efi), reading pxelinux.cfg/
    boot.ipxe                             the HTTP entry point (tcbuild.ipxe)
    pxelinux.cfg/default, 01-<mac>        written beside themselves and renamed into place
    ipxe/default.ipxe, 01-<mac>.ipxe      their twins for HTTP boot, written with them
    tcbuild/releases/<time>-<build>/      kernel, initrd and release.json (their checksums)
A release is complete and fsynced before any config names it, and the current and previous
releases are never pruned, so a node that PXE-boots during a publish gets the old image or the
new one, never a mix. One publish at a time holds `tcbuild/.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import ipxe, syslinux
from .bootfile import IPXE_SCRIPT
from .errors import InputError, TcbuildError, boundary
from .inventory import Inventory
from .pxelinux import CONFIG_DIR, Label, PxeConfig, for_recipe, mac_config_name, parse, render
from .recipe import RELEASE_JSON, Recipe

RELEASES = "tcbuild/releases"
LOCK = "tcbuild/.lock"
IPXE_ENTRY = IPXE_SCRIPT


@dataclass(frozen=True)
class Release:
    """A published release as found in the TFTP root."""

    id: str
    path: Path
    meta: dict[str, Any]

    @property
    def recipe(self) -> str:
        return str(self.meta.get("recipe", "?"))

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.meta.get("files", {}).values())


@dataclass(frozen=True)
class Plan:
    """What a publish will do; `describe` shows it for `--dry-run`."""

    tftp: Path
    release_id: str
    files: dict[str, Path]  # name in the release -> source
    meta: dict[str, Any]
    configs: dict[str, str]  # name in pxelinux.cfg -> content
    bootloader: dict[str, Path]
    prune: tuple[str, ...]
    unchanged: bool = False  # the build is already published and current: nothing to do

    def as_json(self) -> dict[str, object]:
        """The plan as JSON-ready data (`tcbuild publish --json`)."""
        return {"tftp": str(self.tftp), "release": self.release_id, "unchanged": self.unchanged,
                "files": sorted(self.files), "configs": sorted(self.configs),
                "prune": list(self.prune)}

    def describe(self) -> list[str]:
        if self.unchanged:
            return [f"release {RELEASES}/{self.release_id}/ is already published and current: "
                    "nothing to do"]
        lines = [f"new release {RELEASES}/{self.release_id}/"]
        lines += [f"  {name} ({self.meta['files'][name]['size']} bytes)" for name in self.files]
        for name, content in self.configs.items():
            target = self.tftp / CONFIG_DIR / name
            old = target.read_text() if target.is_file() else None
            state = "unchanged" if old == content else ("replace" if old else "create")
            lines.append(f"{CONFIG_DIR}/{name}: {state}")
        for name, source in self.bootloader.items():
            lines.append(f"{name}: from {source}")
        lines += [f"{ipxe.script_path(name)}: the twin of {CONFIG_DIR}/{name}"
                  for name in self.configs]
        lines += [f"prune {RELEASES}/{rid}/" for rid in self.prune]
        return lines


def find_bootloader(directory: Path | None = None) -> dict[str, Path]:
    """The BIOS and UEFI network bootloaders from `directory`, or Debian's usual places."""
    return syslinux.find(syslinux.PXE, directory)


@boundary
def releases(tftp: Path) -> list[Release]:
    """Every complete release, oldest first (by publish time, to the microsecond)."""
    root = tftp / RELEASES
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            meta = json.loads((path / RELEASE_JSON).read_text())
        except (OSError, ValueError):
            continue
        found.append(Release(path.name, path, meta))
    return sorted(found, key=_published)


def _published(release: Release) -> tuple[datetime, str]:
    try:
        return datetime.fromisoformat(str(release.meta.get("time"))), release.id
    except ValueError:
        return datetime.min.replace(tzinfo=UTC), release.id


def _before(found: list[Release], release_id: str) -> list[Release]:
    """The releases published before `release_id` (all of `found`, oldest first)."""
    ids = [r.id for r in found]
    return found[: ids.index(release_id)] if release_id in ids else []


def configs(tftp: Path, strict: bool = False) -> dict[str, PxeConfig]:
    """Every pxelinux config by file name; one tcbuild cannot read is skipped unless `strict`."""
    directory = tftp / CONFIG_DIR
    result = {}
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if path.is_file() and not path.name.startswith("."):
            try:
                result[path.name] = parse(path.read_text(errors="replace"), str(path))
            except InputError:
                if strict:
                    raise
    return result


def release_of(path: str) -> str | None:
    """The release id in a KERNEL/INITRD path, if it points into the releases."""
    parts = path.lstrip("/").split("/")
    prefix = RELEASES.split("/")
    return parts[len(prefix)] if parts[: len(prefix)] == prefix and len(parts) > 2 else None


@boundary
def current(tftp: Path) -> dict[str, set[str]]:
    """Release id -> the config files that boot it (an iPXE script counts as its twin)."""
    used: dict[str, set[str]] = {}
    for name, config in configs(tftp).items():
        for label in config.labels:
            rid = release_of(label.kernel)
            if rid:
                used.setdefault(rid, set()).add(name)
    for name, boots in scripts(tftp).items():
        for boot in boots.values():
            rid = release_of(boot.kernel)
            twin = ipxe.config_name(name)
            if rid and twin:
                used.setdefault(rid, set()).add(twin)
    return used


def scripts(tftp: Path, strict: bool = False) -> dict[str, dict[str, ipxe.Boot]]:
    """Every iPXE script in ipxe/ by file name; one tcbuild cannot read is skipped unless
    `strict`."""
    directory = tftp / ipxe.SCRIPT_DIR
    result = {}
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if path.is_file() and not path.name.startswith("."):
            try:
                result[path.name] = ipxe.parse(path.read_text(errors="replace"), str(path))
            except InputError:
                if strict:
                    raise
    return result


def _config_for(release_id: str, meta: dict[str, Any], append: str | None,
                recipe: Recipe) -> str:
    kernel, initrd = meta["kernel"], meta["initrd"]
    config = for_recipe(recipe, f"{RELEASES}/{release_id}/{kernel}",
                        f"{RELEASES}/{release_id}/{initrd}", append)
    return render(config, f"Generated by tcbuild: release {release_id} of {meta['recipe']}.")


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
    meta = {
        "id": release_id, "recipe": str(recipe.path.resolve()), "name": recipe.name,
        "build_id": build_id,
        "time": stamp.isoformat(), "kernel": kernel.name, "initrd": initrd.name,
        "files": {name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                         "size": p.stat().st_size} for name, p in files.items()},
    }
    served = _configs_served(recipe, inventory)
    bootloader = bootloader or find_bootloader()
    same = None if force else _serving(tftp, meta, served, recipe, bootloader)
    if same is not None:
        return Plan(tftp, same.id, {}, same.meta, {}, {}, (), unchanged=True)
    rendered = {name: _config_for(release_id, meta, append, recipe)
                for name, append in served.items()}
    return Plan(tftp, release_id, files, meta, rendered, bootloader,
                _prunable(tftp, keep, release_id, str(recipe.path.resolve())))


def _serving(tftp: Path, meta: dict[str, Any], served: dict[str, str | None], recipe: Recipe,
             bootloader: dict[str, Path]) -> Release | None:
    """The release that already serves exactly this publish (same files, configs, bootloader)."""
    if any(not (tftp / name).is_file() or (tftp / name).read_bytes() != source.read_bytes()
           for name, source in bootloader.items()):
        return None
    if _read_text(tftp / IPXE_ENTRY) != ipxe.ENTRY:
        return None
    for release in reversed(releases(tftp)):
        if (release.meta.get("recipe"), release.meta.get("files")) != (meta["recipe"],
                                                                      meta["files"]):
            continue
        wanted = {name: _config_for(release.id, release.meta, append, recipe)
                  for name, append in served.items()}
        twins = _twins(wanted)
        if all(_read_text(tftp / CONFIG_DIR / name) == text for name, text in wanted.items()) \
                and all(_read_text(tftp / path) == text for path, text in twins.items()):
            return release
    return None


def _twins(rendered: dict[str, str]) -> dict[str, str]:
    """The iPXE twin of each rendered pxelinux config, by path relative to the root."""
    return ipxe.scripts({name: parse(text, f"{CONFIG_DIR}/{name}")
                         for name, text in rendered.items()})


def _write_configs(tftp: Path, rendered: dict[str, str], owner: os.stat_result) -> None:
    """Each pxelinux config and its iPXE twin, each file replaced whole (the twin first)."""
    twins = _twins(rendered)
    for directory in (CONFIG_DIR, ipxe.SCRIPT_DIR):
        _mkdirs(tftp / directory, tftp, owner)
    for (name, content), (path, script) in zip(rendered.items(), twins.items(), strict=True):
        _replace(tftp / path, script.encode(), owner)
        _replace(tftp / CONFIG_DIR / name, content.encode(), owner)
    for directory in (CONFIG_DIR, ipxe.SCRIPT_DIR):
        _fsync_dir(tftp / directory)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _configs_served(recipe: Recipe, inventory: Inventory | None) -> dict[str, str | None]:
    """Config file -> boot line (None: the recipe's) for the configs this recipe boots.

    The default recipe owns `default` and the hosts of groups that only change the boot line;
    a group's own recipe owns its hosts' per-MAC files and nothing else.
    """
    if inventory is None:
        return {"default": None}
    mine = recipe.path.resolve()
    group_recipes = {g.recipe.resolve() for g in inventory.groups.values() if g.recipe}
    is_default = mine not in group_recipes
    served: dict[str, str | None] = {"default": None} if is_default else {}
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


def _prunable(tftp: Path, keep: int, new_id: str, recipe: str) -> tuple[str, ...]:
    """Old releases beyond `keep`, never a current or previous one once the switch is made.

    What the configs boot now stays (for this recipe it becomes the previous release); for
    other recipes, whose configs this publish leaves alone, so does the release before theirs.
    """
    found = releases(tftp)
    used = set(current(tftp))
    protected = set(used)
    for rid in used:
        theirs = next((r.recipe for r in found if r.id == rid), None)
        older = [r.id for r in _before(found, rid) if r.recipe == theirs]
        if theirs != recipe and older:
            protected.add(older[-1])
    ids = [r.id for r in found] + [new_id]
    surplus = ids[: max(0, len(ids) - keep)]
    return tuple(rid for rid in surplus if rid not in protected and rid != new_id)


@contextlib.contextmanager
def locked(tftp: Path, wait: float = 30.0) -> Iterator[None]:
    """Hold the TFTP root's publish lock, waiting up to `wait` seconds for another holder."""
    lock = tftp / LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as f:
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
    """Write the release, switch the configs to it, prune. Call with the lock held."""
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
            _write(staging / name, source.read_bytes(), owner)
        _write(staging / RELEASE_JSON,
               (json.dumps(plan.meta, indent=1, sort_keys=True) + "\n").encode(), owner)
        _own(staging, owner, 0o755)
        _fsync_dir(staging)
        staging.replace(releases_dir / plan.release_id)
        _fsync_dir(releases_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name, source in plan.bootloader.items():
        data = source.read_bytes()
        target = tftp / name
        if not target.is_file() or target.read_bytes() != data:
            _replace(target, data, owner)
    if _read_text(tftp / IPXE_ENTRY) != ipxe.ENTRY:
        _replace(tftp / IPXE_ENTRY, ipxe.ENTRY.encode(), owner)
    _write_configs(tftp, plan.configs, owner)
    for rid in plan.prune:
        shutil.rmtree(releases_dir / rid, ignore_errors=True)


def switch(tftp: Path, from_id: str, to_id: str) -> list[str]:
    """Point every config that boots `from_id` at `to_id` instead (rollback); the names changed."""
    target = next((r for r in releases(tftp) if r.id == to_id), None)
    if target is None:
        raise InputError(f"{tftp}: no release {to_id}")
    owner = tftp.stat()
    changed: dict[str, str] = {}
    for name, config in configs(tftp).items():
        labels = []
        for label in config.labels:
            if release_of(label.kernel) == from_id:
                label = Label(label.name, f"{RELEASES}/{to_id}/{target.meta['kernel']}",
                              f"{RELEASES}/{to_id}/{target.meta['initrd']}", label.append)
            labels.append(label)
        if tuple(labels) != config.labels:
            new = PxeConfig(config.default, tuple(labels), config.serial, config.timeout,
                            config.prompt)
            text = render(new, f"Generated by tcbuild: release {to_id} of "
                               f"{target.recipe} (rolled back from {from_id}).")
            changed[name] = text
    _write_configs(tftp, changed, owner)
    return list(changed)


def previous(tftp: Path) -> tuple[str, str]:
    """(current, previous) release ids of what `default` boots."""
    used = current(tftp)
    now = next((rid for rid, names in used.items() if "default" in names), None)
    if now is None:
        raise InputError(f"{tftp}: {CONFIG_DIR}/default boots no tcbuild release")
    found = releases(tftp)
    recipe = next((r.recipe for r in found if r.id == now), None)
    older = [r.id for r in _before(found, now) if r.recipe == recipe]
    if not older:
        raise InputError(f"{tftp}: no release before {now} to roll back to")
    return now, older[-1]


@boundary
def verify(tftp: Path) -> list[str]:
    """Every problem of a published tree, one line each (empty when it is sound)."""
    problems: list[str] = []
    if not tftp.is_dir():
        return [f"{tftp}: the TFTP root does not exist"]
    for name in syslinux.PXE:
        if not (tftp / name).is_file():
            problems.append(f"{tftp / name}: missing (from Debian's {syslinux.package(name)})")
    known = {r.id: r for r in releases(tftp)}
    try:
        found = configs(tftp, strict=True)
    except InputError as e:
        return [*problems, str(e)]
    if "default" not in found:
        problems.append(f"{tftp / CONFIG_DIR / 'default'}: missing")
    for name, config in found.items():
        for label in config.labels:
            for named in (label.kernel, label.initrd):
                problems += _check_file(tftp, f"{CONFIG_DIR}/{name}", named, known)
    named_by_configs = {label.kernel.lstrip("/") for c in found.values() for label in c.labels}
    named_by_configs |= {label.initrd.lstrip("/") for c in found.values() for label in c.labels}
    problems += _verify_ipxe(tftp, found, known, named_by_configs)
    for link in tftp.rglob("*"):
        if link.is_symlink():
            target = (link.parent / link.readlink()).resolve()
            if not target.is_relative_to(tftp.resolve()):
                problems.append(f"{link}: symlink points outside the TFTP root ({target})")
    return problems


def _verify_ipxe(tftp: Path, found: dict[str, PxeConfig], known: dict[str, Release],
                 checked: set[str]) -> list[str]:
    """boot.ipxe, a twin for every pxelinux config, and the files the scripts name (those
    a pxelinux config names are `checked` already)."""
    problems = []
    if not (tftp / IPXE_ENTRY).is_file():
        problems.append(f"{tftp / IPXE_ENTRY}: missing (tcbuild publish writes it)")
    try:
        found_scripts = scripts(tftp, strict=True)
    except InputError as e:
        return [*problems, str(e)]
    for name in found:
        if ipxe.script_path(name).split("/")[-1] not in found_scripts:
            problems.append(f"{tftp / ipxe.script_path(name)}: missing (the HTTP twin of "
                            f"{CONFIG_DIR}/{name})")
    for name, boots in found_scripts.items():
        for boot in boots.values():
            for named in [n for n in (boot.kernel, boot.initrd) if n not in checked]:
                problems += _check_file(tftp, f"{ipxe.SCRIPT_DIR}/{name}", named, known)
    return problems


def _check_file(tftp: Path, config: str, path: str, known: dict[str, Release]) -> list[str]:
    full = tftp / path.lstrip("/")
    where = f"{tftp / config}: {path}"
    if not full.is_file():
        return [f"{where}: missing"]
    if not full.stat().st_mode & 0o004:
        return [f"{where}: not readable by others (the TFTP server cannot serve it)"]
    rid = release_of(path)
    if rid is None:
        return []
    release = known.get(rid)
    recorded = release.meta["files"].get(full.name) if release else None
    if recorded is None:
        return [f"{where}: no checksum recorded for it"]
    if hashlib.sha256(full.read_bytes()).hexdigest() != recorded["sha256"]:
        return [f"{where}: does not match the checksum recorded at publish time"]
    return []


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


def _write(path: Path, data: bytes, owner: os.stat_result) -> None:
    with path.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _own(path, owner, 0o644)


def _replace(path: Path, data: bytes, owner: os.stat_result) -> None:
    temp = path.with_name(f".{path.name}.new")
    temp.unlink(missing_ok=True)
    try:
        _write(temp, data, owner)
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
