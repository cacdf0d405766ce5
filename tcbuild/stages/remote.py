"""Remote TFTP roots (`ssh://[user@]host[:port]/path`) as the commands use them: each locked
and pulled into a local mirror, the local code run on the mirror, the difference pushed back to
every root in two phases (`tftproot.push`), every root's lock released on every exit path.

The mirror of a root is `<cache>/remote/<user_host_port_path>/` (the download cache's
directory, `$XDG_CACHE_HOME/tcbuild`), kept between commands so each pull brings only what
changed. It is used only while the far side's lock is held.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..boot import syslinux
from ..config.inventory import Inventory
from ..errors import InputError, TcbuildError, boundary
from ..sources.cache import default_cache_dir
from ..tftproot import push as pushing
from ..tftproot.remote import (
    EXCLUDED,
    LOCKED,
    Remote,
    Root,
    lock_script,
    parse_root,
    printable,
    remote_spec,
    rsync_argv,
    sh_command,
    ssh_argv,
    ssh_base,
    ssh_failure,
    status_error,
)
from ..tftproot.state import Release, distinct_roots, file_sha256, served
from ..tftproot.verify import disagreements, verify_all

if TYPE_CHECKING:
    from ..fleet.overview import FleetReport


@dataclass
class Session:
    """A remote root locked and pulled into `mirror`."""

    remote: Remote
    mirror: Path
    control: Path
    base: list[str]
    lock: subprocess.Popen[str]
    before: pushing.Manifest
    received: int = 0  # bytes the pull received
    sent: int = 0  # bytes the push sent

    def held(self, doing: str) -> None:
        """The lock's session is still there (else the far side's lock is gone too)."""
        if self.lock.poll() is not None:
            raise TcbuildError(f"{self.remote}: {doing} failed: the connection holding the "
                               "root's lock was lost")

    def run(self, command: str, doing: str, stdin: str | None = None) -> str:
        """A command on the far side, through the lock's connection; its stdout."""
        self.held(doing)
        done = subprocess.run(ssh_argv(self.base, self.remote, self.control, command),
                              input=stdin, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ssh_failure(self.remote, done.returncode, done.stderr + done.stdout, doing)
        return done.stdout

    def rsync(self, source: str, target: str, options: Sequence[str], doing: str) -> int:
        """rsync through the lock's connection; the bytes it sent (`--stats`)."""
        self.held(doing)
        argv = rsync_argv(self.base, self.remote, self.control, source, target, options)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise TcbuildError(f"{self.remote}: rsync is not installed here (apt-get install "
                               "rsync)") from None
        if done.returncode != 0:
            raise ssh_failure(self.remote, done.returncode, done.stderr, doing)
        key = "sent" if target.startswith(f"{self.remote.destination}:") else "received"
        found = re.search(rf"Total bytes {key}: ([\d,]+)", done.stdout)
        return int(found.group(1).replace(",", "")) if found else 0

    def show(self, text: str) -> str:
        """A line about the mirror, naming the root's URL instead."""
        return text.replace(str(self.mirror), self.remote.url)

    @property
    def ssh(self) -> str:
        return printable(self.base, self.remote)


def split_roots(roots: Path | str | Remote | Sequence[Path | str | Remote]
                ) -> tuple[list[Path], list[Remote]]:
    """Local and remote roots, each named once."""
    given = [roots] if isinstance(roots, Path | str | Remote) else list(roots)
    parsed: list[Root] = [parse_root(root) for root in given]
    local = distinct_roots([root for root in parsed if isinstance(root, Path)])
    remote = [root for root in parsed if isinstance(root, Remote)]
    urls = [r.url for r in remote]
    for url in urls:
        if urls.count(url) > 1:
            raise InputError(f"{url}: the TFTP root is named twice")
    return local, remote


def local_only(roots: Sequence[Path | str], what: str) -> list[Path]:
    """The roots of a command that takes local ones only; a remote one is one line."""
    local, remote = split_roots(roots)
    if remote:
        raise InputError(f"{remote[0]}: {what} takes local TFTP roots only (the other "
                         "commands take ssh:// roots)")
    return local


def mirror_dir(remote: Remote) -> Path:
    return default_cache_dir() / "remote" / remote.key()


@contextlib.contextmanager
def sessions(remotes: Sequence[Remote], wait: float) -> Iterator[list[Session]]:
    """Every remote root locked (in one order: no deadlock) and pulled; the locks released on
    every exit path (closing the lock session's stdin ends it)."""
    if not remotes:
        yield []
        return
    base = ssh_base()
    with tempfile.TemporaryDirectory(prefix="tcbuild-ssh-") as sockets, \
            contextlib.ExitStack() as held:
        opened: dict[str, Session] = {}
        for i, remote in enumerate(sorted(remotes, key=lambda r: r.url)):
            opened[remote.url] = held.enter_context(_session(remote, base,
                                                             Path(sockets) / f"{i}", wait))
        yield [opened[r.url] for r in remotes]


@contextlib.contextmanager
def _session(remote: Remote, base: list[str], control: Path, wait: float
             ) -> Iterator[Session]:
    argv = ssh_argv(base, remote, control, sh_command(lock_script(), remote.path,
                                                      str(int(wait))), master=True)
    try:
        lock = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise TcbuildError(f"{remote}: {base[0]} is not installed here (apt-get install "
                           "openssh-client)") from None
    try:
        assert lock.stdout is not None and lock.stderr is not None
        status = lock.stdout.readline().strip()
        if status != LOCKED:
            if not status:
                lock.wait()
                raise ssh_failure(remote, lock.returncode or 255, lock.stderr.read(),
                                  "connecting")
            raise status_error(remote, status, wait, printable(base, remote))
        mirror = mirror_dir(remote)
        mirror.mkdir(parents=True, exist_ok=True)
        session = Session(remote, mirror, control, base, lock, {})
        session.received = session.rsync(
            remote_spec(remote, f"{remote.path}/"), f"{mirror}/",
            ["--delete", *(f"--exclude={pattern}" for pattern in EXCLUDED)], "pulling")
        session.before = pushing.scan(mirror)
        yield session
    finally:
        with contextlib.suppress(OSError, ValueError):
            if lock.stdin is not None:
                lock.stdin.close()
        try:
            lock.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lock.kill()
            lock.wait()


def upload(session: Session, prune: Sequence[str] = ()) -> pushing.Push:
    """Phase 1 for one root: stage what changed, send it, check it on the far side."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    planned = pushing.plan_push(session.before, pushing.scan(session.mirror), session.mirror,
                                f"{stamp}-{id(session) & 0xffff:04x}", prune)
    if planned.empty:
        return planned
    root = session.remote.path
    session.run("sh -s", "staging", stdin=pushing.prep_script(planned, root))
    with tempfile.NamedTemporaryFile("w", prefix="tcbuild-files-") as listing:
        listing.write("".join(f"{rel}\n" for rel in planned.send))
        listing.flush()
        if planned.send:
            session.sent = session.rsync(
                f"{session.mirror}/",
                remote_spec(session.remote, f"{root}/{planned.staging}/tree/"),
                [f"--files-from={listing.name}", "--ignore-times"], "uploading")
    session.run(pushing.check_command(planned, root), "checking the upload (sha256)")
    return planned


def discard(session: Session, planned: pushing.Push) -> None:
    """Phase 1 failed somewhere: this root's staging directory removed (or by the next push)."""
    with contextlib.suppress(TcbuildError, OSError):
        session.run(f"rm -rf {session.remote.path}/{planned.staging}", "removing the staging")


def switch(session: Session, planned: pushing.Push) -> str | None:
    """Phase 2 for one root; None, or the line saying how to finish it."""
    if planned.empty:
        return None
    script = f"{session.remote.path}/{planned.staging}"
    try:
        session.run(f"sh {script}/switch.sh", "switching")
    except TcbuildError as e:
        return (f"{e}; finish it with `{session.ssh} sh {script}/switch.sh` or undo it with "
                f"`{session.ssh} sh {script}/undo.sh`")
    return None


def push_all(held: Sequence[Session], prunes: Sequence[Sequence[str]] | None = None
             ) -> list[pushing.Push]:
    """Phase 1 on every root, then (all passed) phase 2 on every root. A phase-1 failure
    leaves every root as it was; phase-2 failures are raised together, each with the command
    that finishes it."""
    planned = upload_all(held, prunes)
    switch_all(held, planned)
    return planned


def upload_all(held: Sequence[Session], prunes: Sequence[Sequence[str]] | None = None
               ) -> list[pushing.Push]:
    done: list[pushing.Push] = []
    try:
        for i, session in enumerate(held):
            done.append(upload(session, prunes[i] if prunes else ()))
    except BaseException:
        for session, planned in zip(held, done, strict=False):
            discard(session, planned)
        raise
    return done


def switch_all(held: Sequence[Session], planned: Sequence[pushing.Push]) -> None:
    failed = [line for session, push in zip(held, planned, strict=True)
              if (line := switch(session, push)) is not None]
    if failed:
        raise TcbuildError("\n".join(failed))


@contextlib.contextmanager
def mirrored(roots: Path | str | Sequence[Path | str], wait: float = 30.0
             ) -> Iterator[tuple[list[Path], Callable[[str], str]]]:
    """The roots to read (the local ones, then each remote one's mirror, locked and pulled)
    and the function that names a mirror's paths in a line by the root's URL."""
    local, remotes = split_roots(roots)
    with sessions(remotes, wait) as far:
        def show(line: str) -> str:
            for session in sorted(far, key=lambda s: -len(str(s.mirror))):
                line = session.show(line)
            return line
        yield local + [session.mirror for session in far], show


@boundary
def verify_roots(roots: Path | str | Sequence[Path | str], inventory: Inventory | None = None,
                 wait: float = 30.0) -> list[str]:
    """`verify_all` over local and remote roots: one line per problem, a disagreement
    between the roots one of them."""
    with mirrored(roots, wait) as (paths, show):
        return [show(line) for line in verify_all(paths, inventory)]


@dataclass(frozen=True)
class RootView:
    """One root as `tcbuild releases` shows it."""

    root: str
    served: list[tuple[Release, list[str]]]  # every release, the configs that boot it
    bootloader: dict[str, str | None]  # the bootloader files' sha256 (None: missing)

    def as_json(self) -> dict[str, object]:
        return {"tftp": self.root, "releases": [r.as_json(c) for r, c in self.served],
                "bootloader": self.bootloader}


@boundary
def releases_of(roots: Path | str | Sequence[Path | str], wait: float = 30.0
                ) -> tuple[list[RootView], list[str]]:
    """Each root's releases and bootloader set, and what the roots disagree on (one line
    each)."""
    with mirrored(roots, wait) as (paths, show):
        for path in paths:
            if not path.is_dir():
                raise InputError(f"{path}: the TFTP root does not exist")
        views = [RootView(show(str(path)), served(path),
                          {name: file_sha256(path / name) for name in syslinux.PXE})
                 for path in paths]
        return views, [show(line) for line in disagreements(paths)]


@boundary
def fleet_report(inventory: Path, logs: Path | None = None, tftp: Path | str | None = None,
                 leases: Sequence[Path] | None = None, wait: float = 30.0) -> FleetReport:
    """`fleet.overview.report` with a TFTP root that may be remote (read from its mirror)."""
    from ..fleet.overview import report

    if tftp is None:
        return report(inventory, logs, None, leases)
    with mirrored(tftp, wait) as (paths, _):
        return report(inventory, logs, paths[0], leases)
