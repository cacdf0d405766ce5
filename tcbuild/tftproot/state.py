"""The TFTP root's state: its releases (`release.json`), its pxelinux configs and what they
boot, each config's history, and the bootloader set. One reader and one writer each; a
malformed file is one line naming it and the key (`StateError`).

    tcbuild/releases/<id>/release.json   the release's files and their checksums
    tcbuild/history.json                 the releases each pxelinux config booted, oldest first
    tcbuild/bootloader.json              the checksums of the bootloader files, as one set

The histories are one file (version 2): each distinct list of releases once (`booted`), and
each config the index of its own (`configs`); a switch rewrites it once, however many configs
it switches. Older trees have one file a config (`tcbuild/history/<config>.json`): still read
(for a config history.json does not name), and folded into history.json, then removed, by the
next switch. The histories are written just before the configs are switched (both durably),
so a switch killed in between leaves a history one step ahead of its config: readers cut it
back to what the config boots (`History.upto`). The bootloader record names the old and the new
set while the files are replaced, then the new set alone: `verify` finds the files all from one
set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..atomic import write_bytes
from ..boot import ipxe
from ..boot.pxelinux import CONFIG_DIR, PxeConfig, parse
from ..config.recipe import RELEASE_JSON
from ..errors import InputError, StateError, boundary
from ..formats import manifest
from ..formats.statefile import Fields, dumps, is_plain_name

RELEASES = "tcbuild/releases"
HISTORIES = "tcbuild/history.json"
HISTORIES_VERSION = 2
HISTORY = "tcbuild/history"  # one file a config: trees of older tcbuilds
BOOTLOADER = "tcbuild/bootloader.json"
HISTORY_LIMIT = 100  # entries kept per config


@dataclass(frozen=True)
class Checksum:
    sha256: str
    size: int


@dataclass(frozen=True)
class Release:
    """A release (`release.json`, checked) and where it lives in the TFTP root."""

    id: str
    path: Path
    recipe: str
    name: str
    build_id: str
    time: datetime
    kernel: str
    initrd: str
    files: Mapping[str, Checksum]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    def as_json(self, configs: list[str]) -> dict[str, Any]:
        """The release as `releases --json` and `fleet --json` show it, with the configs that
        boot it."""
        return {"id": self.id, "recipe": self.recipe, "time": self.time.isoformat(),
                "size": self.size, "configs": configs}

    def text(self) -> bytes:
        return dumps({
            "id": self.id, "recipe": self.recipe, "name": self.name, "build_id": self.build_id,
            "time": self.time.isoformat(), "kernel": self.kernel, "initrd": self.initrd,
            "files": {n: {"sha256": c.sha256, "size": c.size} for n, c in self.files.items()},
        })

    @classmethod
    def read(cls, path: Path) -> Release:
        """The release in directory `path`; FileNotFoundError when it has no release.json."""
        f = Fields.read(path / RELEASE_JSON)
        rid = f.string("id")
        if rid != path.name:
            f.fail("id", f"{rid!r} is not the name of its directory")
        try:
            time = datetime.fromisoformat(f.string("time"))
        except ValueError:
            f.fail("time", "not an ISO 8601 time")
        if time.tzinfo is None:
            f.fail("time", "has no time zone")
        files = {}
        for name, checksum in f.table("files").items():
            if not is_plain_name(name) or name == RELEASE_JSON:
                f.obj("files").fail(name, "not a plain file name beside release.json")
            files[name] = Checksum(checksum.sha256("sha256"), checksum.number("size"))
        kernel, initrd = f.name("kernel"), f.name("initrd")
        for key, name in (("kernel", kernel), ("initrd", initrd)):
            if name not in files:
                f.fail(key, f"{name!r} has no checksum under files")
        if kernel == initrd:
            f.fail("initrd", "the same file as the kernel")
        return cls(rid, path, f.string("recipe"), f.string("name"), f.sha256("build_id"), time,
                   kernel, initrd, files)


def scan(tftp: Path) -> tuple[list[Release], list[str]]:
    """Every release, oldest first (by publish time, to the microsecond), and one line per
    release.json tcbuild cannot read. A directory without one is not a release."""
    root = tftp / RELEASES
    found, problems = [], []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            found.append(Release.read(path))
        except FileNotFoundError:
            continue
        except StateError as e:
            problems.append(str(e))
    return sorted(found, key=lambda r: (r.time, r.id)), problems


@boundary
def releases(tftp: Path) -> list[Release]:
    """Every release, oldest first; a damaged release.json is a StateError."""
    found, problems = scan(tftp)
    if problems:
        raise StateError("\n".join(problems))
    return found


@boundary
def served(tftp: Path) -> list[tuple[Release, list[str]]]:
    """Every release, oldest first, with the configs that boot it (`tcbuild releases`)."""
    used = current(tftp)
    return [(release, sorted(used.get(release.id, ()))) for release in releases(tftp)]


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


def read_config(tftp: Path, name: str) -> PxeConfig | None:
    """One pxelinux config, as `configs` reads it (None: absent, or tcbuild cannot read it)."""
    path = tftp / CONFIG_DIR / name
    try:
        return parse(path.read_text(errors="replace"), str(path))
    except (OSError, InputError):
        return None


def release_of(path: str) -> str | None:
    """The release id in a KERNEL/INITRD path, if it points into the releases."""
    parts = path.lstrip("/").split("/")
    prefix = RELEASES.split("/")
    return parts[len(prefix)] if parts[: len(prefix)] == prefix and len(parts) > 2 else None


@boundary
def current(tftp: Path) -> dict[str, set[str]]:
    """Release id -> the config files that boot it (an iPXE script counts as its twin)."""
    return current_of(configs(tftp), scripts(tftp))


def current_of(found: Mapping[str, PxeConfig], found_scripts: Mapping[str, dict[str, ipxe.Boot]]
               ) -> dict[str, set[str]]:
    """`current` of configs and scripts already read."""
    used: dict[str, set[str]] = {}
    for name, config in found.items():
        for label in config.labels:
            rid = release_of(label.kernel)
            if rid:
                used.setdefault(rid, set()).add(name)
    for name, boots in found_scripts.items():
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


def booting(config: PxeConfig) -> str | None:
    """The release a config's default label boots (None: not a tcbuild release)."""
    return release_of(config.label(config.default).kernel)



@dataclass(frozen=True)
class History:
    """What a pxelinux config booted, oldest first (its entry in `tcbuild/history.json`)."""

    config: str
    booted: tuple[str, ...] = ()

    @classmethod
    def read(cls, tftp: Path, config: str) -> History:
        """One config's history (for many, `read_histories` reads the file once)."""
        shared = _read_shared(tftp)
        if config in shared:
            return shared[config]
        return cls._read_file(history_path(tftp, config), config)

    @classmethod
    def _read_file(cls, path: Path, config: str) -> History:
        """An older tree's `tcbuild/history/<config>.json`."""
        try:
            f = Fields.read(path)
        except FileNotFoundError:
            return cls(config)
        booted = f.array("booted")
        for i, rid in enumerate(booted):
            if not isinstance(rid, str) or not is_plain_name(rid):
                f.fail("booted", f"entry {i} is not a release id")
        return cls(config, tuple(str(rid) for rid in booted))

    def text(self) -> bytes:
        """The history alone, as an older tree's `tcbuild/history/<config>.json` holds it."""
        return dumps({"config": self.config, "booted": list(self.booted)})

    def upto(self, now: str | None) -> History:
        """The history as far as the config's current release `now` (what follows was written
        for a switch that never happened); `now` added when the record lacks it."""
        if now is None:
            return self
        if now not in self.booted:
            return History(self.config, (*self.booted, now))
        last = len(self.booted) - 1 - self.booted[::-1].index(now)
        return History(self.config, self.booted[: last + 1])

    def back(self, exists: set[str]) -> str | None:
        """The release a rollback returns to: the latest before the current one still there."""
        return next((rid for rid in reversed(self.booted[:-1]) if rid in exists), None)

    def switched(self, target: str, exists: set[str]) -> History:
        """The history once the config boots `target`: one step back when `target` is where a
        rollback returns to, else `target` added (a publish, a rollback to a chosen release)."""
        if target == self.back(exists):
            kept = self.booted[:-1]
            while kept[-1] != target:
                kept = kept[:-1]
            return History(self.config, kept)
        return History(self.config, (*self.booted, target)[-HISTORY_LIMIT:])


def read_histories(tftp: Path) -> dict[str, History]:
    """Every config's history: `tcbuild/history.json`, and an older tree's per-config files
    for the configs it does not name. A damaged file is a StateError."""
    found = _read_shared(tftp)
    for name, path in legacy_histories(tftp).items():
        if name not in found:
            found[name] = History._read_file(path, name)
    return found


def _read_shared(tftp: Path) -> dict[str, History]:
    try:
        f = Fields.read(tftp / HISTORIES)
    except FileNotFoundError:
        return {}
    version = f.number("version")
    if version != HISTORIES_VERSION:
        f.fail("version", f"{version} is not a version this tcbuild reads "
                          f"({HISTORIES_VERSION})")
    runs = []
    for i, run in enumerate(f.array("booted")):
        if not isinstance(run, list) or not all(isinstance(rid, str) and is_plain_name(rid)
                                                for rid in run):
            f.fail("booted", f"entry {i} is not a list of release ids")
        runs.append(tuple(run))
    names = f.obj("configs")
    found = {}
    for name in names.data:
        if not is_plain_name(name):
            names.fail(name, "not a config's file name")
        index = names.number(name)
        if index >= len(runs):
            names.fail(name, f"names entry {index} of booted, which has {len(runs)}")
        found[name] = History(name, runs[index])
    return found


def histories_text(histories: Mapping[str, History]) -> bytes:
    """`tcbuild/history.json` (written with the configs: `writing.switch_configs`): each
    distinct history once, in the order of the first config (by name) that has it."""
    runs: dict[tuple[str, ...], int] = {}
    names = {name: runs.setdefault(histories[name].booted, len(runs))
             for name in sorted(histories)}
    return dumps({"version": HISTORIES_VERSION, "booted": [list(run) for run in runs],
                  "configs": names})


def legacy_histories(tftp: Path) -> dict[str, Path]:
    """An older tree's per-config history files, by config name (none once folded)."""
    try:
        entries = list(os.scandir(tftp / HISTORY))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {entry.name[: -len(".json")]: Path(entry.path) for entry in sorted(
        entries, key=lambda e: e.name) if entry.name.endswith(".json")
        and not entry.name.startswith(".") and entry.is_file(follow_symlinks=False)}


def history_path(tftp: Path, config: str) -> Path:
    """An older tree's `tcbuild/history/<config>.json`."""
    return tftp / HISTORY / f"{config}.json"


BootSet = Mapping[str, str]  # bootloader file name -> sha256


def read_bootsets(tftp: Path) -> list[dict[str, str]]:
    """The recorded bootloader sets, the newest last (two while a new set is installed)."""
    try:
        f = Fields.read(tftp / BOOTLOADER)
    except FileNotFoundError:
        return []
    sets = []
    for entry in f.objects("sets"):
        for name in entry.data:
            if not is_plain_name(name):
                entry.fail(name, "not a plain file name")
        sets.append({name: entry.sha256(name) for name in entry.data})
    return sets


def write_bootsets(tftp: Path, sets: list[BootSet], owner: os.stat_result) -> None:
    data: dict[str, Any] = {"sets": [dict(sorted(s.items())) for s in sets]}
    write_bytes(tftp / BOOTLOADER, dumps(data), owner=owner)


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file, None when there is none."""
    try:
        return manifest.file_sha256(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def distinct_roots(roots: Sequence[Path]) -> list[Path]:
    """The roots given, each once: a root named twice (under any spelling of its path) is bad
    input, not a lock that waits on itself."""
    seen: dict[Path, Path] = {}
    for root in roots:
        real = root.resolve()
        if real in seen:
            also = "" if seen[real] == root else f" (also as {seen[real]})"
            raise InputError(f"{root}: the TFTP root is named twice{also}")
        seen[real] = root
    return list(roots)


def check_wait(wait: float) -> float:
    """How long to wait for the lock: a finite number of seconds >= 0."""
    if not isinstance(wait, int | float) or not math.isfinite(wait) or wait < 0:
        raise InputError(f"wait: {wait!r} is not a finite number of seconds >= 0")
    return wait
