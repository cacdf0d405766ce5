"""The one durable write: files appear whole or not at all, and stay after a power cut.

Every file goes the same way: a temp file (locked while its writer lives), its bytes, fsync,
rename onto the target, fsync of the directory. A writer killed with `kill -9` leaves its temp
file behind, unlocked; the next write to that target (or `sweep` of the directory) removes it.
Temp files are hidden (`.<name>.<random>.tcbuild-tmp`), so listings of a directory skip them.
What is checked whenever it is read (the cache's derived data) may skip the fsyncs
(`durable=False`): still whole or absent for every reader, but a power cut may lose or tear it,
and its reader then makes it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

SUFFIX = ".tcbuild-tmp"
Data = bytes | Iterable[bytes | bytearray | memoryview]  # the bytes, or parts in a row
Content = Data | Callable[[], Data]  # a file of several written together: made when its turn comes


@contextlib.contextmanager
def temp_file(directory: Path, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A new temp file in `directory`, locked while it is open; removed at exit unless `commit`
    moved it into place."""
    fd, path = _new_temp(directory, prefix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, path
    finally:
        path.unlink(missing_ok=True)


def _new_temp(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new temp file's descriptor (locked) and path."""
    while True:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=SUFFIX)
        fcntl.flock(fd, fcntl.LOCK_EX)  # tells `sweep` (in this run or another) that it lives
        try:
            if Path(name).stat().st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)  # swept between its creation and the lock: take another


def commit(f: BinaryIO, temp: Path, target: Path, mode: int = 0o644,
           owner: os.stat_result | None = None, *, durable: bool = True) -> None:
    """Make a temp file of `temp_file` durable and rename it onto `target` (the same file
    system), then make the rename durable."""
    f.flush()
    os.fchmod(f.fileno(), mode)
    if owner is not None and os.geteuid() == 0:
        os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
    if durable:
        os.fsync(f.fileno())
    temp.replace(target)
    if durable:
        fsync_dir(target.parent)


def write_bytes(target: Path, data: Data, mode: int = 0o644,
                owner: os.stat_result | None = None, temp_dir: Path | None = None, *,
                durable: bool = True) -> None:
    """Write `data` (bytes, or parts in a row) to `target` durably. The temp file goes beside
    the target, or into `temp_dir` (which the caller sweeps)."""
    write_file(target, lambda f: f.writelines([data] if isinstance(data, bytes) else data),
               mode, owner, temp_dir, durable=durable)


def write_file(target: Path, write: Callable[[BinaryIO], object], mode: int = 0o644,
               owner: os.stat_result | None = None, temp_dir: Path | None = None, *,
               durable: bool = True) -> None:
    """Stream a file through `write` into a temp file and rename it onto `target` durably. On
    any error the temp file is removed and an existing `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if temp_dir is None:
        sweep(target.parent, f".{target.name}.")
    with temp_file(temp_dir or target.parent, f".{target.name}.") as (f, temp):
        write(f)
        commit(f, temp, target, mode, owner, durable=durable)


def publish_files(out: Path, files: Mapping[str, Content], retire: str | None = None) -> None:
    """Write every file of `out` beside its target and fsync it, then rename them all into
    place, in order, and fsync the directory. `retire` (a file that vouches for the others) is
    removed before the first rename."""
    out.mkdir(parents=True, exist_ok=True)
    write_all([(out / name, data) for name, data in files.items()],
              retire=out / retire if retire else None)


def write_all(files: Sequence[tuple[Path, Content]], mode: int = 0o644,
              owner: os.stat_result | None = None, retire: Path | None = None) -> None:
    """Several files switched together: each written to a temp file beside its target, all
    made durable, then all renamed in a row (in order, after `retire` is removed), then each
    directory fsynced. A reader sees the old files or the new ones, but for the moment between
    two renames. Parts are written as they come; a callable is called when its file's turn
    comes (after the files before it are written).

    For thousands of files (a fleet's per-MAC configs): each directory is swept once, not once
    per file; the temp files are closed once written (their directories, locked shared, keep
    `sweep` away from them until the renames), so any number fits the open-files limit, and
    made durable by one `syncfs` per file system instead of one fsync each. The files replaced
    are held open across the row of renames (as many as the limit leaves room for), so that
    freeing them (the costly part of a rename onto a file, on ext4) comes after the row, not
    inside it: the row stays short."""
    directories = list(dict.fromkeys(target.parent for target, _ in files))
    for directory in directories:
        sweep(directory)
    many = len(files) > BATCH
    staged: list[tuple[int | None, Path, Path]] = []  # the temp's descriptor while open
    held: list[int] = []
    renamed = 0
    with _rows(directories) as directory_fds:
        try:
            for target, data in files:
                fd, temp = _new_temp(target.parent, f".{target.name}.")
                staged.append((fd, temp, target))
                if callable(data):  # made now: it may depend on the files written before it
                    data = data()
                with open(fd, "wb", closefd=False) as f:
                    f.writelines([data] if isinstance(data, bytes) else data)
                os.fchmod(fd, mode)
                if owner is not None and os.geteuid() == 0:
                    os.fchown(fd, owner.st_uid, owner.st_gid)
                if many:  # the directory's lock keeps it from `sweep`; syncfs needs no fd
                    os.close(fd)
                    staged[-1] = (None, temp, target)
            _durable(staged, directory_fds)
            room = _allow_open(len(files) + len(directory_fds))
            held = _hold([target for _, _, target in staged][: max(0, room)])
            if retire:
                retire.unlink(missing_ok=True)
            for _, temp, target in staged:
                temp.replace(target)
                renamed += 1
            for directory_fd in directory_fds:
                os.fsync(directory_fd)
        finally:
            for _, temp, _ in staged[renamed:]:  # not renamed: an error on the way
                temp.unlink(missing_ok=True)
            for still_open, _, _ in staged:
                if still_open is not None:
                    os.close(still_open)
            _release(held)


@contextlib.contextmanager
def _rows(directories: Sequence[Path]) -> Iterator[list[int]]:
    """The directories opened and locked shared while a row of files is written into them:
    `sweep` leaves a directory alone while any writer holds it so."""
    fds: list[int] = []
    try:
        for directory in directories:
            fds.append(os.open(directory, os.O_RDONLY | os.O_DIRECTORY))
            fcntl.flock(fds[-1], fcntl.LOCK_SH)
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _hold(paths: Sequence[Path]) -> list[int]:
    """The regular files among `paths`, opened for reading (kept from being freed)."""
    held = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # none yet (or not a file to hold)
        held.append(fd)
    return held


def _release(fds: Sequence[int]) -> None:
    """Close `fds`: the files replaced meanwhile are freed now, several at a time (freeing
    thousands one by one waits on the file system's journal in turn)."""
    if len(fds) <= BATCH:
        for fd in fds:
            os.close(fd)
        return
    from concurrent.futures import ThreadPoolExecutor

    def close(part: Sequence[int]) -> None:
        for fd in part:
            os.close(fd)
    workers = 4
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(close, [fds[k::workers] for k in range(workers)]))


BATCH = 32  # past this many files, one syncfs per file system beats an fsync each


def _durable(staged: Sequence[tuple[int | None, Path, Path]], directory_fds: Sequence[int]
             ) -> None:
    """The temp files' data and metadata on disk: fsync each (open), or for many (closed),
    syncfs once per file system through the directories (where syncfs is missing or fails,
    each reopened and fsynced)."""
    open_fds = [fd for fd, _, _ in staged if fd is not None]
    if len(open_fds) == len(staged):
        for fd in open_fds:
            os.fsync(fd)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    devices = {os.fstat(fd).st_dev: fd for fd in directory_fds}
    for device, fd in devices.items():
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            for _, temp, _ in staged:
                if temp.stat().st_dev == device:
                    with temp.open("rb") as f:
                        os.fsync(f.fileno())


def _allow_open(count: int) -> int:
    """Raise the soft limit on open files (up to the hard one) if `count` more may not fit;
    how many more may be opened (keeping 64 for the rest of the process)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and count + 64 > soft and hard != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return count if soft == resource.RLIM_INFINITY else soft - 64


def sweep(directory: Path, prefix: str = "", everything: bool = False) -> int:
    """Remove the temp files (of this module) that no live writer holds: those of writers
    killed mid-way. `prefix` narrows to one target's; `everything` takes any file (a directory
    only for temp files). The number removed."""
    removed = 0
    try:
        paths = list(directory.iterdir())
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        fcntl.flock(directory_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a row of files is being written here (`write_all`): its temps live
        os.close(directory_fd)
        return 0
    try:
        removed = _sweep(paths, prefix, everything)
    finally:
        os.close(directory_fd)
    return removed


def _sweep(paths: Sequence[Path], prefix: str, everything: bool) -> int:
    removed = 0
    for path in paths:
        if not path.name.startswith(prefix) or not (everything or path.name.endswith(SUFFIX)):
            continue
        try:
            with path.open("rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if path.stat().st_ino == os.fstat(f.fileno()).st_ino:
                    path.unlink()
                    removed += 1
        except OSError:
            continue  # in use by a live writer, or gone already
    return removed


def fsync_dir(path: Path) -> None:
    """Make the names in a directory (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
