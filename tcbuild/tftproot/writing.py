"""Changing a TFTP root safely: one writer at a time (`locked`), directories and files as the
tree's owner's (`mkdirs`, `own`), the bootloader files replaced as one set
(`install_bootloader`), pxelinux configs switched together with their iPXE twins and
the histories (`switch_configs`; `put_configs` and `drop_configs` for the per-MAC configs a rollout,
`enroll` or `retire` writes between two publishes), and the snapshot that undoes a change
(`snapshot`, `Before.restore`: a multi-root publish that fails in one root).

`releases` plans and writes releases and switches configs through these; `hostconfig` writes one
host's config with them. The histories are written just before the configs (`state.History`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..atomic import fsync_dir, write_all, write_bytes
from ..boot import ipxe
from ..boot.pxelinux import CONFIG_DIR, PxeConfig, parse
from ..errors import InputError, TcbuildError
from .state import (
    BOOTLOADER,
    HISTORIES,
    History,
    booting,
    check_wait,
    configs,
    file_sha256,
    histories_text,
    legacy_histories,
    read_bootsets,
    read_histories,
    releases,
    write_bootsets,
)

LOCK = "tcbuild/.lock"


@contextlib.contextmanager
def locked(tftp: Path, wait: float = 30.0) -> Iterator[None]:
    """Hold the TFTP root's publish lock, waiting up to `wait` seconds for another holder."""
    check_wait(wait)
    lock = tftp / LOCK
    mkdirs(lock.parent, tftp, tftp.stat())
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


def own(path: Path, owner: os.stat_result, mode: int) -> None:
    path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, owner.st_uid, owner.st_gid)


def mkdirs(path: Path, root: Path, owner: os.stat_result) -> None:
    for parent in reversed([path, *path.parents]):
        if parent == root or not parent.is_relative_to(root) or parent.is_dir():
            continue
        parent.mkdir(mode=0o755)
        own(parent, owner, 0o755)


def twins(rendered: dict[str, str]) -> dict[str, str]:
    """The iPXE twin of each rendered pxelinux config, by path relative to the root."""
    return ipxe.scripts({name: parse(text, f"{CONFIG_DIR}/{name}")
                         for name, text in rendered.items()})


def history_for(tftp: Path, name: str, config: PxeConfig | None, target: str,
                exists: set[str], known: Mapping[str, History] | None = None) -> History:
    """A config's history once it boots `target` (`config`: what it is now, if anything).
    `known`: every config's history, read once (`read_histories`) for a loop over configs."""
    history = History.read(tftp, name) if known is None else known.get(name, History(name))
    now = booting(config) if config is not None else None
    return history.upto(now).switched(target, exists)


def switch_configs(tftp: Path, changes: dict[str, tuple[str, History]],
                   owner: os.stat_result, retire: tuple[str, ...] = (),
                   known: Mapping[str, History] | None = None) -> None:
    """The configs switched together: every file written first, then the histories (one file,
    every config's) renamed, then each config's iPXE twin renamed just before it, all in a row
    (a node booting meanwhile finds the configs as they were, or as they are now, but for the
    moment between two renames); then each retired config removed, its twin after it (a kill
    in between leaves a twin that still names its release, retired by the next publish); then
    an older tree's per-config history files, folded into the one file. `known`: every
    config's history, already read (`read_histories`)."""
    scripts = twins({name: text for name, (text, _) in changes.items()})
    for directory in (CONFIG_DIR, ipxe.SCRIPT_DIR, str(Path(HISTORIES).parent)):
        mkdirs(tftp / directory, tftp, owner)
    histories = dict(known) if known is not None else read_histories(tftp)
    folded = legacy_histories(tftp)
    histories.update((name, history) for name, (_, history) in changes.items())
    for name in retire:
        histories.pop(name, None)
    files: list[tuple[Path, bytes]] = [(tftp / HISTORIES, histories_text(histories))]
    for (name, (text, _)), (path, script) in zip(changes.items(), scripts.items(), strict=True):
        files += [(tftp / path, script.encode()), (tftp / CONFIG_DIR / name, text.encode())]
    write_all(files, owner=owner)
    for name in retire:
        for gone in (tftp / CONFIG_DIR / name, tftp / ipxe.script_path(name)):
            gone.unlink(missing_ok=True)
            fsync_dir(gone.parent)
    for old in folded.values():
        old.unlink(missing_ok=True)
    if folded:
        fsync_dir(next(iter(folded.values())).parent)


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
    mkdirs((tftp / BOOTLOADER).parent, tftp, owner)
    # the set the files are now: a recorded one they match, or (none recorded) what is there
    old = next((s for s in recorded if all(present.get(n) == d for n, d in s.items())),
               None if recorded else present)
    write_bootsets(tftp, [old, new] if old and old != new else [new], owner)
    for name, source in files.items():
        if file_sha256(tftp / name) != new[name]:
            write_bytes(tftp / name, source.read_bytes(), owner=owner)
    write_bootsets(tftp, [new], owner)


def put_configs(tftp: Path, texts: dict[str, str]) -> None:
    """Write pxelinux configs (each text rendered by tcbuild, booting a release) with their
    iPXE twins and histories, switched together (a rollout's per-MAC configs). Call with the
    lock held."""
    found = configs(tftp)
    exists = {r.id for r in releases(tftp)}
    known = read_histories(tftp)
    changes = {}
    for name, text in texts.items():
        target = booting(parse(text, f"{CONFIG_DIR}/{name}"))
        if target is None:
            raise InputError(f"{CONFIG_DIR}/{name}: the new text boots no tcbuild release")
        changes[name] = (text, history_for(tftp, name, found.get(name), target, exists, known))
    switch_configs(tftp, changes, tftp.stat(), known=known)


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


Kept = tuple[bytes, os.stat_result] | str | None  # a file's bytes, a symlink's target, absent


@dataclass(frozen=True)
class Before:
    """What a publish may change in a root, as it was (`snapshot`): its files (the bootloader
    set, `boot.ipxe`, the configs, their twins, the histories, `bootloader.json`), the
    directories it may make, and the release it adds. `restore` puts it all back."""

    tftp: Path
    release: Path
    files: dict[str, Kept]  # relative path -> what was there (anything else is not touched)
    missing_dirs: tuple[str, ...]

    def restore(self) -> None:
        """Undo the publish: the release leaves the listing by one rename and is removed, every
        file is as it was (bytes, mode, owner), the directories made are removed again."""
        release = self.release
        doomed = release.parent / f".{release.name}.partial"
        with contextlib.suppress(FileNotFoundError):
            release.replace(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        for rel, kept in self.files.items():  # bootloader.json last: it vouches for the set
            _put_back(self.tftp / rel, kept)
        for rel in self.missing_dirs:  # deepest first
            with contextlib.suppress(OSError):
                (self.tftp / rel).rmdir()


def snapshot(tftp: Path, release: Path, files: Sequence[str], dirs: Sequence[str]) -> Before:
    """What `files` (relative paths) are now, and which of `dirs` are missing."""
    kept: dict[str, Kept] = {}
    for rel in files:
        path = tftp / rel
        try:
            info = path.lstat()
        except FileNotFoundError:
            kept[rel] = None
            continue
        except NotADirectoryError:
            continue
        if stat.S_ISLNK(info.st_mode):
            kept[rel] = str(path.readlink())
        elif stat.S_ISREG(info.st_mode):
            kept[rel] = (path.read_bytes(), info)
    missing = [rel for rel in dirs if not (tftp / rel).is_dir()]
    return Before(tftp, release, kept,
                  tuple(sorted(missing, key=lambda rel: rel.count("/"), reverse=True)))


def _put_back(path: Path, kept: Kept) -> None:
    if kept is None:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            path.unlink()
            fsync_dir(path.parent)
    elif isinstance(kept, str):
        if not path.is_symlink() or str(path.readlink()) != kept:
            temp = path.parent / f".{path.name}.tcbuild-undo"
            temp.unlink(missing_ok=True)
            temp.symlink_to(kept)
            temp.replace(path)
            fsync_dir(path.parent)
    else:
        data, info = kept
        try:
            now = path.lstat()
            same = (stat.S_ISREG(now.st_mode) and path.read_bytes() == data
                    and (now.st_mode, now.st_uid, now.st_gid)
                    == (info.st_mode, info.st_uid, info.st_gid))
        except FileNotFoundError:
            same = False
        if not same:
            write_bytes(path, data, mode=stat.S_IMODE(info.st_mode), owner=info)
