"""The fleet view kept current: the log directory followed, only what was appended read.

`Follower` holds, per log file of an inventory host, where it stopped reading and what the
lines so far said (a `view.Latest`); each `report()` lists the log directory once, reads what
each file gained since, and judges the hosts as `overview.survey` does, so its report is the one
`fleet --json` prints for the same files. A file seen for the first time (or rotated, replaced,
shrunk) is read as `logtail.read_node` reads it: from its end, and an older rotation only when the
host's newer files leave its boot or error open (`logtail.needed`); from then on only the bytes
appended to it are read. A compressed file is read again whenever it changed; a file gone drops
out with what it said. The half line a writer has not finished counts as it stands and is read
again when it grows. Error lines are counted as they are appended (`errors`: since the
follower started, a Prometheus counter). The TFTP root is read again only when one of its
configs, scripts, releases or the rollout record changed (their names, sizes and times).

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
from .logtail import OPENERS, last_line_end, needed, tail_scan
from .overview import FleetReport, named_configs
from .view import (
    Latest,
    Named,
    NodeStatus,
    judge,
    later,
    rotation_rank,
    scan,
)

Signature = tuple[int, int, int, int]  # device, inode, size, mtime (ns)
COMPRESSED = tuple(OPENERS)


@dataclass
class _File:
    """One log file as far as it was read."""

    name: str
    host: Host
    rank: tuple[int, int, str]
    errors: bool  # an -err.log file
    signature: Signature
    pending: bool = True  # not read yet: read from its end when the host's view needs it
    offset: int = 0  # a plain file's bytes read, up to the end of its last whole line
    latest: Latest = field(default_factory=Latest)  # what the whole lines said
    tail: Latest = field(default_factory=Latest)  # what the half line after them says


def merge(into: Latest, other: Latest) -> None:
    """Fold `other`'s latest line, boot and error into `into`."""
    if other.last is not None:
        into.last = later(into.last, *other.last)
    if other.boot is not None:
        into.boot = later(into.boot, *other.boot)
    if other.error is not None:
        into.error = later(into.error, *other.error)


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
        self.errors: dict[str, int] = {}  # host -> error lines appended since the start
        self.bytes_read = 0  # of log files, by the last `read`
        self._started = False  # the log directory was read once

    def report(self) -> FleetReport:
        """The fleet now; an unreadable log directory or tree is a TcbuildError."""
        return self.read()[0]

    @boundary
    def read(self) -> tuple[FleetReport, dict[str, int]]:
        """The fleet now, and the error lines seen per host."""
        with self._lock:
            self.bytes_read = 0
            dirty = self._read_logs()
            if self._read_tree():
                dirty = set(self._names)
            tftp = self.tftp is not None
            for name in dirty:  # only the hosts whose files or configs changed are judged
                latest = self._host_latest(name)
                self._status[name] = judge(self._names[name], latest.node(),
                                           self._named.get(name), tftp)
            hosts = tuple(self._status[h.name] for h in self.inventory.hosts)
            new = tuple(discovered(self.inventory, self.logs, self.leases))
            rolling = record.read(self.tftp) if self.tftp is not None else None
            counted = {h.name: self.errors.get(h.name, 0) for h in self.inventory.hosts}
            return FleetReport(hosts, new, self._served, rolling), counted

    # -- the logs --------------------------------------------------------------------------

    def _read_logs(self) -> set[str]:
        """Read what the files gained; the names of the hosts whose files changed."""
        try:
            entries = {e.name: e for e in os.scandir(self.logs)}
        except OSError as e:
            raise InputError(f"{self.logs}: cannot list the log directory "
                             f"({e.strerror or e})") from e
        dirty = set(self._names) - set(self._status)  # the first time: every host
        moved: dict[tuple[int, int], _File] = {}  # renamed (rotated): found again by inode
        for name in [n for n in self._files if n not in entries]:
            kept = self._drop(name, dirty)  # gone: what it said goes with it
            if kept is not None and not kept.pending:
                moved[kept.signature[:2]] = kept
        owners = self._owners  # only the names listed now are kept: rotations come and go
        self._owners = {name: owners[name] if name in owners else self._owner(name)
                        for name in entries}
        for name, entry in entries.items():
            owner = self._owners[name]
            if owner is None:
                continue
            kept = self._files.get(name)
            if kept is not None and kept.signature[1] == entry.inode() \
                    and name.endswith(COMPRESSED):
                continue  # a compressed rotation is never written to: its inode says it all
            try:
                st = entry.stat()
            except OSError:
                self._drop(name, dirty)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if self._follow(name, owner, signature, moved):
                dirty.add(owner[0].name)
        self._started = True
        return dirty

    def _drop(self, name: str, dirty: set[str]) -> _File | None:
        kept = self._files.pop(name, None)
        if kept is not None:
            self._by_host[kept.host.name].discard(name)
            dirty.add(kept.host.name)
        return kept

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
                signature: Signature, moved: dict[tuple[int, int], _File]) -> bool:
        """Read what the file gained, or mark it to be read from its end; False: it did not
        change. A file seen before under another name (`moved`) goes on from where it was."""
        host, errors, rank = owner
        kept = self._files.get(name) or moved.pop(signature[:2], None)
        if kept is not None and kept.signature == signature and kept.name == name:
            return False
        compressed = name.endswith(COMPRESSED)
        if (kept is None or kept.pending or compressed or kept.signature[:2] != signature[:2]
                or signature[2] < kept.offset):
            # Before the first reading, and any compressed file or one not read yet: read from
            # its end once the host's view needs it. Later, a plain file that is new, replaced
            # or shrunk: its lines were appended since, all read (and its errors counted).
            pending = compressed or not self._started or (kept is not None and kept.pending)
            kept = _File(name, host, rank, errors, signature, pending=pending)
            if not kept.pending:
                self._append(kept)
        kept.name, kept.host, kept.rank, kept.errors = name, host, rank, errors
        self._files[name] = kept
        self._by_host.setdefault(host.name, set()).add(name)
        if kept.signature != signature:
            kept.signature = signature
            self._append(kept)
        return True

    def _host_latest(self, host: str) -> Latest:
        """What the host's files say, newest first, each file not read yet read from its end
        if the newer ones leave its boot (or error) open."""
        latest = Latest()
        files = sorted((self._files[n] for n in self._by_host.get(host, ())),
                       key=lambda kept: kept.rank, reverse=True)
        for kept in files:
            if kept.pending:
                if not needed(self.logs / kept.name, kept.errors, latest):
                    continue
                self._read_end(kept)
            merge(latest, kept.latest)
            merge(latest, kept.tail)
        return latest

    def _read_end(self, kept: _File) -> None:
        """A file's first reading: back from its end, as `logtail.read_node` reads it."""
        path = self.logs / kept.name
        kept.pending = False
        if kept.name.endswith(COMPRESSED):
            tail_scan(path, kept.host.ip, kept.rank, kept.errors, kept.latest)
            return
        kept.offset = last_line_end(path)
        tail_scan(path, kept.host.ip, kept.rank, kept.errors, kept.latest, end=kept.offset)
        self._append(kept)  # the half line after it, if any

    def _append(self, kept: _File) -> None:
        """Read a plain file from where the last reading stopped."""
        try:
            with (self.logs / kept.name).open("rb") as f:
                f.seek(kept.offset)
                data = f.read()
        except OSError:
            return  # gone or unreadable: the next listing says which
        self.bytes_read += len(data)
        whole = data.rfind(b"\n") + 1
        lines, at = [], 0
        for raw in data[:whole].split(b"\n")[:-1]:
            lines.append((kept.offset + at, raw.decode("utf-8", errors="replace")))
            at += len(raw) + 1
        ip, rank, errors = kept.host.ip, kept.rank, kept.errors
        taken = scan(lines, ip, rank, errors, kept.latest)
        if errors:  # a counter: what a file said stays counted when the file goes
            self.errors[kept.host.name] = self.errors.get(kept.host.name, 0) + taken
        kept.offset += whole
        kept.tail = Latest()
        if whole < len(data):
            half = data[whole:].decode("utf-8", errors="replace")
            scan([(kept.offset, half)], ip, rank, errors, kept.tail)

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
        self._named = named_configs(self.tftp, self.inventory.hosts, builds)
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

