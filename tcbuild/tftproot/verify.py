"""`tcbuild verify`: every problem of a published TFTP root, one line each.

The bootloader files must be there and come from one recorded set, every config must parse and
name files that are there and as their release recorded them, and have its iPXE twin; every
file served (the bootloader set, `boot.ipxe`, the configs, scripts, kernels and initrds) must be
readable by others, and every directory on its way from the root readable and searchable (the
TFTP server runs as another user); every state file must read, and no symlink may lead out of
the root. With an inventory, a per-MAC config no host has is named, and the discovery config
missing (the inventory has a discovery range) or left behind (it has none); with several
roots, a config or a bootloader file they disagree on.
"""

from __future__ import annotations

import stat
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from ..boot import ipxe, syslinux
from ..boot.bootfile import IPXE_SCRIPT
from ..boot.pxelinux import CONFIG_DIR, PxeConfig, mac_config_name
from ..config import discovery
from ..config.inventory import Inventory
from ..errors import InputError, StateError, boundary
from . import rollout
from .state import (
    BOOTLOADER,
    Release,
    booting,
    configs,
    distinct_roots,
    file_sha256,
    read_bootsets,
    read_histories,
    release_of,
    scan,
    scripts,
)


@boundary
def verify_all(roots: Sequence[Path], inventory: Inventory | None = None) -> list[str]:
    """`verify` of each root, then what several roots (boot servers of one tree) disagree on:
    every config must boot the same release in each of them, and every bootloader file (and
    `boot.ipxe`) be the same."""
    roots = distinct_roots(roots)
    problems: list[str] = []
    found: dict[Path, Mapping[str, PxeConfig]] = {}
    for root in roots:
        found[root], lines = _verify(root, inventory)  # each config read once, here
        problems += lines
    return problems + disagreements(roots, found)


def disagreements(roots: Sequence[Path], found: Mapping[Path, Mapping[str, PxeConfig]]
                  | None = None) -> list[str]:
    """What several roots (boot servers of one tree) disagree on, one line each: a bootloader
    file or `boot.ipxe` not the same, a config booting another release or missing in one.
    `found`: each root's configs, already read."""
    if len(roots) < 2:
        return []
    problems = []
    for name in (*syslinux.PXE, IPXE_SCRIPT):
        digests = {root: file_sha256(root / name) for root in roots}
        if len(set(digests.values())) > 1:
            says = ", ".join(f"{root} {digest[:12] if digest else 'missing'}"
                             for root, digest in digests.items())
            problems.append(f"{name}: the roots disagree: sha256 {says}")
    booted: dict[str, dict[Path, str | None]] = {}
    for root in roots:
        if found is not None:
            read = found.get(root, {})
        else:
            try:
                read = configs(root) if root.is_dir() else {}
            except StateError:
                continue  # verify names it
        for name, config in read.items():
            booted.setdefault(name, {})[root] = booting(config)
    for name, where in sorted(booted.items()):
        if len(where) < len(roots) or len(set(where.values())) > 1:
            says = ", ".join(f"{root} {rid or 'nothing'}" for root, rid in where.items())
            missing = [str(root) for root in roots if root not in where]
            problems.append(f"{CONFIG_DIR}/{name}: the roots disagree: boots {says}"
                            + (f"; missing in {', '.join(missing)}" if missing else ""))
    return problems


@boundary
def verify(tftp: Path, *, inventory: Inventory | None = None) -> list[str]:
    """Every problem of a published tree, one line each (empty when it is sound). With
    `inventory`, also each per-MAC config that none of its hosts has."""
    return _verify(tftp, inventory)[1]


def _verify(tftp: Path, inventory: Inventory | None) -> tuple[dict[str, PxeConfig], list[str]]:
    """`verify`, with the configs read (none when they could not all be read)."""
    if not tftp.is_dir():
        return {}, [f"{tftp}: the TFTP root does not exist"]
    problems: list[str] = []
    blocked: set[Path] = set()  # the unreadable directories named so far (each once)
    for name in syslinux.PXE:
        if not (tftp / name).is_file():
            problems.append(f"{tftp / name}: missing (from Debian's {syslinux.package(name)})")
        else:
            problems += _check_modes(tftp, name, blocked)
    try:
        problems += _check_bootloader(tftp)
    except StateError as e:
        problems.append(str(e))
    found_releases, damaged = scan(tftp)
    problems += damaged
    known = {r.id: r for r in found_releases}
    try:
        found = configs(tftp, strict=True)
    except InputError as e:
        return configs(tftp), [*problems, str(e)]
    try:
        found_scripts, unread = scripts(tftp, strict=True), None
    except InputError as e:  # named below; the scripts that read still count as twins
        found_scripts, unread = scripts(tftp), str(e)
    if "default" not in found:
        problems.append(f"{tftp / CONFIG_DIR / 'default'}: missing")
    if inventory is not None:
        problems += _unowned(tftp, found, found_scripts, inventory)
    seen: dict[str, FileCheck] = {}
    for name, config in found.items():
        problems += _check_modes(tftp, f"{CONFIG_DIR}/{name}", blocked)
        for label in config.labels:
            for named in (label.kernel, label.initrd):
                problems += _check_file(tftp, f"{CONFIG_DIR}/{name}", named, known, blocked,
                                        seen)
    try:
        read_histories(tftp)
    except StateError as e:
        problems.append(str(e))
    problems += _check_rollout(tftp, known)
    named_by_configs = {label.kernel.lstrip("/") for c in found.values() for label in c.labels}
    named_by_configs |= {label.initrd.lstrip("/") for c in found.values() for label in c.labels}
    problems += _verify_ipxe(tftp, found, (found_scripts, unread), known, named_by_configs,
                             blocked, seen)
    for link in tftp.rglob("*"):
        if link.is_symlink():
            target = (link.parent / link.readlink()).resolve()
            if not target.is_relative_to(tftp.resolve()):
                problems.append(f"{link}: symlink points outside the TFTP root ({target})")
    return found, problems


def _check_rollout(tftp: Path, known: dict[str, Release]) -> list[str]:
    """A rollout's record reads and, while unfinished, names a release that is there (per-MAC
    configs booting another release than `default` are what a rollout is made of)."""
    try:
        found = rollout.read(tftp)
    except StateError as e:
        return [str(e)]
    if found is None or found.phase.finished or found.release in known:
        return []
    return [f"{tftp / rollout.ROLLOUT}: the unfinished rollout's release {found.release} is "
            "not in the tree"]


def _check_bootloader(tftp: Path) -> list[str]:
    """The bootloader files all come from one recorded set (none recorded: not checked)."""
    sets = read_bootsets(tftp)
    if not sets:
        return []
    present = {name: file_sha256(tftp / name) for s in sets for name in s}
    if any(all(present[name] == digest for name, digest in s.items()) for s in sets):
        return []
    return [f"{tftp / name}: not the {name} of the bootloader set installed with the others "
            f"(recorded in {BOOTLOADER})" for name, digest in sets[-1].items()
            if present[name] is not None and present[name] != digest]


def _unowned(tftp: Path, found: dict[str, PxeConfig], found_scripts: Collection[str],
             inventory: Inventory) -> list[str]:
    """The per-MAC configs (or iPXE scripts) of a MAC no host of the inventory has; the
    discovery config missing, or left behind by an inventory without a discovery range."""
    macs = {mac_config_name(host.mac) for host in inventory.hosts}
    prefix = mac_config_name("00:00:00:00:00:00")[:3]
    twins = {twin for name in found_scripts if (twin := ipxe.config_name(name))}
    present = set(found) | twins
    problems = [f"{tftp / CONFIG_DIR / name}: no host of {inventory.path} has this MAC (left "
                "behind: publish with --inventory retires it)"
                for name in sorted(present) if name.startswith(prefix) and name not in macs]
    wanted = inventory.cluster.discovery is not None
    if wanted and discovery.CONFIG not in found:
        problems.append(f"{tftp / CONFIG_DIR / discovery.CONFIG}: missing ({inventory.path} has "
                        "a discovery range: publish with --inventory writes it)")
    elif not wanted and discovery.CONFIG in present:
        problems.append(f"{tftp / CONFIG_DIR / discovery.CONFIG}: {inventory.path} has no "
                        "discovery range (left behind: publish with --inventory retires it)")
    return problems


def _check_modes(tftp: Path, rel: str, blocked: set[Path]) -> list[str]:
    """The first of the directories from the root to `rel`, and `rel`, that others cannot read
    (a directory: read and search), as one line (a directory only the first time)."""
    path = tftp
    for step in ["", *(part for part in rel.split("/") if part)]:
        path = path / step if step else path
        try:
            mode = path.stat().st_mode
        except OSError:
            return []  # missing: named where it is looked for
        need = 0o005 if stat.S_ISDIR(mode) else 0o004
        if mode & need == need:
            continue
        if not stat.S_ISDIR(mode):
            return [f"{path}: not readable by others (the TFTP server cannot serve it)"]
        if path in blocked:
            return []
        blocked.add(path)
        return [f"{path}: directory not readable and searchable by others (mode "
                f"{stat.S_IMODE(mode):04o}; the TFTP server cannot serve what is in it)"]
    return []


def _verify_ipxe(tftp: Path, found: dict[str, PxeConfig],
                 read: tuple[dict[str, dict[str, ipxe.Boot]], str | None],
                 known: dict[str, Release], checked: set[str], blocked: set[Path],
                 seen: dict[str, FileCheck]) -> list[str]:
    """boot.ipxe, a twin for every pxelinux config, and the files the scripts name (those
    a pxelinux config names are `checked` already). `read`: the scripts, and the line naming
    one that does not read (then nothing more is checked)."""
    problems = []
    if not (tftp / IPXE_SCRIPT).is_file():
        problems.append(f"{tftp / IPXE_SCRIPT}: missing (tcbuild publish writes it)")
    else:
        problems += _check_modes(tftp, IPXE_SCRIPT, blocked)
    found_scripts, unread = read
    if unread is not None:
        return [*problems, unread]
    for name in found:
        if ipxe.script_path(name).split("/")[-1] not in found_scripts:
            problems.append(f"{tftp / ipxe.script_path(name)}: missing (the HTTP twin of "
                            f"{CONFIG_DIR}/{name})")
    for name, boots in found_scripts.items():
        problems += _check_modes(tftp, f"{ipxe.SCRIPT_DIR}/{name}", blocked)
        for boot in boots.values():
            for named in [n for n in (boot.kernel, boot.initrd) if n not in checked]:
                problems += _check_file(tftp, f"{ipxe.SCRIPT_DIR}/{name}", named, known,
                                        blocked, seen)
    return problems


FileCheck = tuple[str | None, list[str]]  # a problem of the file itself, or lines as they are


def _check_file(tftp: Path, config: str, path: str, known: dict[str, Release],
                blocked: set[Path], seen: dict[str, FileCheck]) -> list[str]:
    """A file a config names: there, readable, as its release recorded it. Each file is
    looked at (and hashed) once, however many configs name it (`seen`): a problem of the file
    itself is named for every config, a directory on its way only the first time."""
    first = path not in seen
    if first:
        seen[path] = _look_at(tftp, path, known, blocked)
    problem, lines = seen[path]
    if problem is not None:
        return [f"{tftp / config}: {path}: {problem}"]
    return lines if first else []


def _look_at(tftp: Path, path: str, known: dict[str, Release], blocked: set[Path]) -> FileCheck:
    full = tftp / path.lstrip("/")
    if not full.is_file():
        return "missing", []
    unreadable = _check_modes(tftp, path, blocked)
    if unreadable and unreadable[0].startswith(f"{full}: "):
        return "not readable by others (the TFTP server cannot serve it)", []
    if unreadable:
        return None, unreadable
    rid = release_of(path)
    if rid is None:
        return None, []
    release = known.get(rid)
    recorded = release.files.get(full.name) if release else None
    if recorded is None:
        return "no checksum recorded for it", []
    if file_sha256(full) != recorded.sha256:
        return "does not match the checksum recorded at publish time", []
    return None, []
