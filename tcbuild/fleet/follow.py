"""The fleet view kept current: the log directory followed, only what was appended read.

`Follower` holds, per log file of an inventory host, where it stopped reading and what the
lines so far said (a `view.Latest`); each `report()` lists the log directory once, reads what
each file gained since, and judges the hosts as `view.survey` does, so its report is the one
`fleet --json` prints for the same files. A file that shrank or whose inode changed (rotated,
replaced) is read again from its start; a compressed one whenever it changed; a file gone
drops out with what it said. The half line a writer has not finished counts as it stands and
is read again when it grows. The TFTP root is read again only when one of its configs, scripts,
releases or the rollout record changed (their names, sizes and times compared).

Reading only: nothing is written, no file is kept open between reports.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..boot import ipxe
from ..boot.pxelinux import CONFIG_DIR
from ..config.inventory import Host, Inventory, log_names
from ..config.inventoryfile import load_inventory
from ..config.recipe import RELEASE_JSON
from ..errors import InputError, boundary
from ..tftproot import rollout as record
from ..tftproot.state import RELEASES, Release, served
from .discover import discovered
from .logtail import OPENERS
from .overview import FleetReport
from .view import (
    Latest,
    Named,
    NodeStatus,
    _later,
    _lines,
    judge,
    pxe_release,
    rotation_rank,
    scan,
)

Signature = tuple[int, int, int, int]  # device, inode, size, mtime (ns)


@dataclass
class _File:
    """One log file as far as it was read."""

    host: Host
    rank: tuple[int, int, str]
    errors: bool  # an -err.log file
    signature: Signature
    offset: int = 0  # bytes read up to the end of the last whole line
    lines: int = 0  # whole lines read
    latest: Latest = field(default_factory=Latest)  # what the whole lines said
    tail: Latest = field(default_factory=Latest)  # what the half line after them says


def merge(into: Latest, other: Latest) -> None:
    """Fold `other`'s latest line, boot and error (and its error count) into `into`."""
    if other.last is not None:
        into.last = _later(into.last, *other.last)
    if other.boot is not None:
        into.boot = _later(into.boot, *other.boot)
    if other.error is not None:
        into.error = _later(into.error, *other.error)
    into.errors += other.errors


class Follower:
    """`fleet`'s report, read again on each call from where the last one stopped."""

    def __init__(self, inventory: Path | Inventory, logs: Path | None = None,
                 tftp: Path | None = None, leases: Iterable[Path] | None = None) -> None:
        self.inventory = (inventory if isinstance(inventory, Inventory)
                          else load_inventory(inventory))
        self.logs = logs if logs is not None else Path(self.inventory.cluster.log_dir)
        self.tftp = tftp
        self.leases = list(leases) if leases is not None else None
        if not self.logs.is_dir():
            raise InputError(f"{self.logs}: no such log directory")
        if tftp is not None and not tftp.is_dir():
            raise InputError(f"{tftp}: the TFTP root does not exist")
        self._bases = {base: (host, i == 1) for host in self.inventory.hosts
                       for i, base in enumerate(log_names(host.name))}
        self._files: dict[str, _File] = {}
        self._names = {host.name: host for host in self.inventory.hosts}
        self._owners: dict[str, tuple[Host, bool, tuple[int, int, str]] | None] = {}
        self._by_host: dict[str, set[str]] = {}  # host -> the names of its files
        self._status: dict[str, NodeStatus] = {}  # host -> as last judged
        self._tree: tuple[object, ...] | None = None
        self._named: dict[str, Named | None] = {}
        self._served: tuple[tuple[Release, tuple[str, ...]], ...] = ()
        self._lock = threading.Lock()  # one report at a time: a server answers in threads
        self.errors: dict[str, int] = {}  # host -> error lines seen, as last read

    def report(self) -> FleetReport:
        """The fleet now; an unreadable log directory or tree is a TcbuildError."""
        return self.read()[0]

    @boundary
    def read(self) -> tuple[FleetReport, dict[str, int]]:
        """The fleet now, and the error lines seen per host."""
        with self._lock:
            dirty = self._read_logs()
            if self._read_tree():
                dirty = set(self._names)
            tftp = self.tftp is not None
            for name in dirty:  # only the hosts whose files or configs changed are judged
                latest = Latest()
                for file_name in self._by_host.get(name, ()):
                    kept = self._files[file_name]
                    merge(latest, kept.latest)
                    merge(latest, kept.tail)
                self._status[name] = judge(self._names[name], latest.node(),
                                           self._named.get(name), tftp)
                self.errors[name] = latest.errors
            hosts = tuple(self._status[h.name] for h in self.inventory.hosts)
            new = tuple(discovered(self.inventory, self.logs, self.leases))
            rolling = record.read(self.tftp) if self.tftp is not None else None
            return FleetReport(hosts, new, self._served, rolling), dict(self.errors)

    # -- the logs --------------------------------------------------------------------------

    def _read_logs(self) -> set[str]:
        """Read what the files gained; the names of the hosts whose files changed."""
        try:
            entries = {e.name: e for e in os.scandir(self.logs)}
        except OSError as e:
            raise InputError(f"{self.logs}: cannot list the log directory "
                             f"({e.strerror or e})") from e
        dirty = set(self._names) - set(self._status)  # the first time: every host
        for name in [n for n in self._files if n not in entries]:
            self._drop(name, dirty)  # gone: what it said goes with it
        for name, entry in entries.items():
            if name not in self._owners:
                self._owners[name] = self._owner(name)
            owner = self._owners[name]
            if owner is None:
                continue
            try:
                st = entry.stat()
            except OSError:
                self._drop(name, dirty)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if self._follow(name, owner, signature):
                dirty.add(owner[0].name)
        return dirty

    def _drop(self, name: str, dirty: set[str]) -> None:
        kept = self._files.pop(name, None)
        if kept is not None:
            self._by_host[kept.host.name].discard(name)
            dirty.add(kept.host.name)

    def _owner(self, name: str) -> tuple[Host, bool, tuple[int, int, str]] | None:
        """The host, error file or not, and rotation rank of a file name; None: no host's."""
        at = name.find(".log")
        while at >= 0:
            base = name[:at + 4]
            if base in self._bases:
                rank = rotation_rank(base, name)
                if rank is not None:
                    host, errors = self._bases[base]
                    return host, errors, rank
            at = name.find(".log", at + 1)
        return None

    def _follow(self, name: str, owner: tuple[Host, bool, tuple[int, int, str]],
                signature: Signature) -> bool:
        """Read what the file gained, or all of it again; False: it did not change."""
        host, errors, rank = owner
        kept = self._files.get(name)
        if kept is not None and kept.signature == signature:
            return False
        path = self.logs / name
        compressed = path.suffix in OPENERS
        if (kept is None or compressed or kept.signature[:2] != signature[:2]
                or signature[2] < kept.offset):
            kept = _File(host, rank, errors, signature)  # new, rotated, shrunk: from the start
        self._files[name] = kept
        self._by_host.setdefault(host.name, set()).add(name)
        kept.signature = signature
        if compressed:
            scan(_lines(path), host.ip, rank, errors, kept.latest)
            return True
        try:
            with path.open("rb") as f:
                f.seek(kept.offset)
                data = f.read()
        except OSError:
            self._drop(name, set())
            return True
        whole, _, half = data.rpartition(b"\n")
        if whole or data.startswith(b"\n"):
            lines = [raw.decode("utf-8", errors="replace") for raw in whole.split(b"\n")]
            scan(lines, host.ip, rank, errors, kept.latest, kept.lines)
            kept.offset += len(whole) + 1
            kept.lines += len(lines)
        kept.tail = Latest()
        if half:
            scan([half.decode("utf-8", errors="replace")], host.ip, rank, errors, kept.tail,
                 kept.lines)
        return True

    # -- the tree --------------------------------------------------------------------------

    def _read_tree(self) -> bool:
        """Read the tree again if it changed; whether it did."""
        if self.tftp is None:
            return False
        if not self.tftp.is_dir():
            raise InputError(f"{self.tftp}: the TFTP root does not exist")
        now = tuple(_listing(self.tftp / where) for where in
                    (CONFIG_DIR, ipxe.SCRIPT_DIR, RELEASES)) + (_listing(self.tftp / "tcbuild"),)
        if now == self._tree:
            return False
        found = served(self.tftp)
        builds = {release.id: release.build_id[:12] for release, _ in found}
        self._named = {h.name: pxe_release(self.tftp, h, builds) for h in self.inventory.hosts}
        self._served = tuple((release, tuple(configs)) for release, configs in found)
        self._tree = now
        return True


def _listing(directory: Path) -> tuple[tuple[str, Signature], ...]:
    """A directory's entries with their signatures (a release's directory: its release.json's),
    sorted; () when there is none."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return ()
    for entry in entries:
        try:
            st = ((Path(entry.path) / RELEASE_JSON).stat() if entry.is_dir()
                  else entry.stat())
        except OSError:
            continue
        found.append((entry.name, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)))
    return tuple(sorted(found))

