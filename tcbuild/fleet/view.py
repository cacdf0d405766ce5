"""The operator's fleet view: which build and release each node booted, and is it current.

Read from the log host's files, as the generated rsyslog rules (`bootserver.rsyslog`) write
them: `<log_dir>/<node>.log` holds everything the node sends, `<node>-err.log` the game
server's errors. Rotated copies are read too (`node.log.1`, `node.log.2.gz`,
`node.log-20261130`, compressed with gzip, bzip2 or xz). Each line is in tcbuild's format
(`bootserver.rsyslog.LINE_FORMAT`): the time the log host received it, the address it came
from, then the sender's tag and message:

    2026-11-30T15:41:54.123456+00:00 10.1.1.5 bootlocal: game-server node, build 0123456789ab, ...

Nothing the sender wrote is trusted for who or when: a line counts only when it sits in the
file of an inventory host and carries that host's address, and its time is the log host's.
Lines without an address (older formats, a sender's own hostname) are skipped. The node's
/opt/bootlocal.sh logs `build <id>, release <release id>, kernel <version>, uptime=<seconds>`
under the tag `bootlocal`; its last such line is the node's last boot, and the kernel's uptime
then how long the boot took (older images say no uptime). The release a node should boot is the
one its pxelinux config names, looked up as pxelinux does: `01-<mac>`, the address in hex and its
prefixes, then `default`. Lines that are not such lines (or name a time out of range), and files
that cannot be read, are skipped (a warning for a file), never fatal.

Pure parsing and judging (`parse_line`, `scan`, `judge`, `render`) apart from the reading
(`read_node`, `pxe_release`, `survey`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO, Any, TypeVar

from ..boot.pxelinux import CONFIG_DIR, mac_config_name, parse
from ..config.inventory import Host, Inventory, log_names
from ..config.inventoryfile import load_inventory
from ..errors import InputError, boundary
from ..tftproot.releases import release_of, releases
from .logtail import OPENERS, READ_ERRORS, backwards

log = logging.getLogger("tcbuild")

BOOT_TAG = "bootlocal"  # the programname of /opt/bootlocal.sh's lines
BOOT = re.compile(r"\bbuild (?P<build>[0-9a-f]{6,64})\b(?:, release (?P<release>[\w.:-]+))?")
UPTIME = re.compile(r"\buptime=(?P<seconds>\d{1,9}(?:\.\d{1,6})?)\b")  # the kernel's, at that line
RELEASE_BUILD = re.compile(r"-([0-9a-f]{12})(?:\.\d+)?$")  # a release id ends in its build's
UNKNOWN_RELEASE = "unknown"  # what bootlocal.sh says when no release was on its kernel line

LINE = re.compile(r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?P<fraction>\.\d+)?"
                  r"(?P<zone>Z|[+-]\d\d:\d\d) (?P<source>\d{1,3}(?:\.\d{1,3}){3}) (?P<rest>.*)",
                  re.ASCII)
TAG = re.compile(r"(?P<program>[^\s:\[\]]{1,64})(?:\[[^\s\]]*\])?:(?: |$)")
ROTATED = re.compile(r"(?:\.(?P<number>\d{1,6})|-(?P<date>\d[\d-]*))?(?P<ext>\.gz|\.bz2|\.xz)?")


class State(StrEnum):
    CURRENT = "current"  # booted the release its pxelinux config names
    STALE = "STALE"  # booted another one: reboot it when the time is appropriate
    UNKNOWN = "unknown"  # booted, but nothing to compare with (no --tftp, no boot line, ...)
    NEVER_SEEN = "never seen"  # no line from it at all


@dataclass(frozen=True)
class Line:
    """One line of a log file: when the log host received it, from which address, the program's
    name and the sender's text (tag and message)."""

    time: datetime  # aware, UTC
    source: IPv4Address
    program: str  # "" when the line carries no tag
    text: str  # tag and message, as written


@dataclass(frozen=True)
class Boot:
    time: datetime
    build: str
    release: str | None  # None when the node could not tell
    seconds: float | None = None  # the kernel's uptime when it said so: how long the boot took


@dataclass(frozen=True)
class NodeLog:
    """What a node's files say: its last line, its last boot, its last error."""

    last: Line | None = None
    boot: Boot | None = None
    error: Line | None = None


@dataclass(frozen=True)
class Named:
    """The pxelinux config that applies to a node and the release it names (None: not ours)."""

    config: str  # e.g. pxelinux.cfg/01-52-54-00-12-34-56
    release: str | None
    build: str | None  # that release's short build id, when known


@dataclass(frozen=True)
class NodeStatus:
    name: str
    ip: str
    state: State
    seen: datetime | None
    boot: Boot | None
    named: Named | None
    error: Line | None
    note: str = ""  # why the state is unknown

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "ip": self.ip, "state": str(self.state).lower(),
            "last_seen": _iso(self.seen),
            "booted": _iso(self.boot.time) if self.boot else None,
            "boot_seconds": self.boot.seconds if self.boot else None,
            "build": self.boot.build if self.boot else None,
            "release": self.boot.release if self.boot else None,
            "named": ({"config": self.named.config, "release": self.named.release}
                      if self.named else None),
            "last_error": ({"time": _iso(self.error.time), "line": self.error.text}
                           if self.error else None),
            "note": self.note or None,
        }


# -- parsing (pure) ----------------------------------------------------------------------------


def parse_line(text: str) -> Line | None:
    """A line as the generated rsyslog rules write it, or None for anything else (a line
    without a source address, a time that is no date or out of range)."""
    found = LINE.fullmatch(text)
    if found is None:
        return None
    fraction = (found["fraction"] or "")[:7]  # microseconds at most
    try:
        when = datetime.fromisoformat(f"{found['time']}{fraction}{found['zone']}").astimezone(UTC)
        source = IPv4Address(found["source"])
    except (ValueError, OverflowError):  # 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        return None
    rest = found["rest"]
    tag = TAG.match(rest)
    return Line(when, source, tag["program"] if tag else "", rest)


def boot_of(line: Line) -> Boot | None:
    """The build and release a bootlocal line names, if it is the boot line."""
    if line.program != BOOT_TAG:
        return None
    found = BOOT.search(line.text)
    if not found:
        return None
    release = found["release"]
    uptime = UPTIME.search(line.text, found.end())
    return Boot(line.time, found["build"], None if release in (None, UNKNOWN_RELEASE) else release,
                float(uptime["seconds"]) if uptime else None)


# A line's place in time: its timestamp, then the file's age (older rotations first), then its
# position in the file. The latest wins; clocks that jump only blur the order, never crash it.
Key = tuple[datetime, tuple[int, int, str], int]
T = TypeVar("T")


@dataclass
class Latest:
    """The latest line, boot and error line seen so far, each with its `Key`."""

    last: tuple[Key, Line] | None = None
    boot: tuple[Key, Boot] | None = None
    error: tuple[Key, Line] | None = None

    def node(self) -> NodeLog:
        return NodeLog(self.last[1] if self.last else None, self.boot[1] if self.boot else None,
                       self.error[1] if self.error else None)


def scan(lines: Iterable[tuple[int, str]], source: IPv4Address, rank: tuple[int, int, str],
         errors: bool, latest: Latest) -> int:
    """Update `latest` with the lines that came from `source` (the node's address), each
    given with its byte offset in its file; with `errors` (an -err.log file) each line is an
    error. How many lines came from `source`."""
    taken = 0
    for offset, text in lines:
        line = parse_line(text.rstrip("\r\n"))
        if line is None or line.source != source:
            continue
        taken += 1
        key = (line.time, rank, offset)
        latest.last = later(latest.last, key, line)
        if errors:
            latest.error = later(latest.error, key, line)
        boot = boot_of(line)
        if boot is not None:
            latest.boot = later(latest.boot, key, boot)
    return taken


def later(kept: tuple[Key, T] | None, key: Key, value: T) -> tuple[Key, T]:
    return (key, value) if kept is None or kept[0] < key else kept


def rotation_rank(base: str, name: str) -> tuple[int, int, str] | None:
    """Where file `name` stands among `base`'s rotations (higher: newer); None if not one."""
    if not name.startswith(base):
        return None
    found = ROTATED.fullmatch(name[len(base):])
    if found is None:
        return None
    if found["number"] is not None:
        return (0, -int(found["number"]), "")
    if found["date"] is not None:
        return (1, 0, found["date"])
    return (2, 0, "")


def judge(host: Host, node: NodeLog, named: Named | None, tftp: bool) -> NodeStatus:
    """Is the node's last boot the release its pxelinux config names now?"""
    seen = node.last.time if node.last else None
    note = ""
    if node.last is None and node.error is None:
        state = State.NEVER_SEEN
    elif node.boot is None:
        state, note = State.UNKNOWN, "no boot line in its logs"
    elif not tftp:
        state = State.UNKNOWN
    elif named is None:
        state, note = State.UNKNOWN, "no pxelinux config applies to it"
    elif named.release is None:
        state, note = State.UNKNOWN, f"{named.config} boots no tcbuild release"
    elif node.boot.release is not None:
        state = State.CURRENT if node.boot.release == named.release else State.STALE
    elif named.build is not None:  # the node could not tell its release: compare the images
        state = State.CURRENT if node.boot.build == named.build else State.STALE
    else:
        state, note = State.UNKNOWN, "the node did not say its release"
    if seen is None and node.error is not None:
        seen = node.error.time
    return NodeStatus(host.name, str(host.ip), state, seen, node.boot, named, node.error, note)


def config_names(host: Host) -> list[str]:
    """The config files pxelinux tries for this host, in its order (UUID aside)."""
    hexed = f"{int(IPv4Address(host.ip)):08X}"
    return [mac_config_name(host.mac), *(hexed[:n] for n in range(8, 0, -1)), "default"]


def render(nodes: Iterable[NodeStatus]) -> list[str]:
    """One line per node, columns aligned: name, state, boot time, build, release, last error,
    then why it is stale or unknown."""
    rows = [_row(n) for n in nodes]
    widths = [max((len(row[i]) for row in rows if len(row) > i + 1), default=0)
              for i in range(6)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)),
                       row[-1]]).rstrip() for row in rows]


def _row(n: NodeStatus) -> list[str]:
    if n.state is State.NEVER_SEEN:
        return [n.name, str(n.state)]
    note = n.note
    if n.state is State.STALE and n.named:
        note = f"{n.named.config} names {n.named.release}"
    boot = n.boot
    return [n.name, str(n.state),
            f"booted {_iso(boot.time)}" if boot else f"seen {_iso(n.seen)}",
            f"build {boot.build}" if boot else "build ?",
            f"release {(boot.release if boot else None) or '?'}",
            f"last error {_iso(n.error.time)} {n.error.text}" if n.error else "no errors",
            f"({note})" if note else ""]


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


# -- reading -----------------------------------------------------------------------------------


def read_node(logs: Path, host: Host, index: LogIndex | None = None) -> NodeLog:
    """The node's last line, boot and error from `<name>.log`, `<name>-err.log` and rotations,
    each line counted only if it came from the node's address (`index`: the directory's
    `log_index`, listed once for many hosts).

    Files are read newest first and from their end: `<name>.log` back to its last boot line,
    `<name>-err.log` back to its last line. An older rotation is read only while a boot (or an
    error) is still missing, or when it was written to (its mtime) at or after the lines kept,
    so it could hold a later one; lines of one file are taken to be in time order.
    """
    latest = Latest()
    files = sorted(_node_files(logs, host, index), key=lambda f: f[1], reverse=True)
    for path, rank, errors in files:
        if needed(path, errors, latest):
            tail_scan(path, host.ip, rank, errors, latest)
    return latest.node()


def needed(path: Path, errors: bool, latest: Latest) -> bool:
    """Whether an older file could change `latest`: a boot (an error, for an -err.log file) is
    still missing, or it was written to at or after the one kept."""
    kept = latest.error if errors else latest.boot
    if kept is None:
        return True
    try:
        return path.stat().st_mtime >= kept[0][0].timestamp()
    except OSError:
        return True  # reading it warns


def tail_scan(path: Path, source: IPv4Address, rank: tuple[int, int, str], errors: bool,
              latest: Latest, end: int | None = None) -> None:
    """`scan` over the file's end (`end`: a plain file's bytes before that offset): its lines
    last first, back to the first boot line (with `errors`, the first line) that came from
    `source`. Past the file's last line from `source` only boot lines can matter: the others
    are not parsed."""
    address, tag = f" {source} ".encode(), f" {BOOT_TAG}".encode()
    seen = False
    for offset, raw in backwards(path, lambda raw: address in raw, end=end):
        if seen and tag not in raw:
            continue
        line = parse_line(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        if line is None or line.source != source:
            continue
        seen = True
        key = (line.time, rank, offset)
        latest.last = later(latest.last, key, line)
        if errors:
            latest.error = later(latest.error, key, line)
            return
        boot = boot_of(line)
        if boot is not None:
            latest.boot = later(latest.boot, key, boot)
            return


def node_lines(logs: Path, host: Host) -> Iterator[tuple[Line, bool]]:
    """Every line of the node's files (rotations too) that came from its address, with
    whether it sits in the error file; file by file, in no particular order."""
    for path, _, errors in _node_files(logs, host):
        for text in _lines(path):
            line = parse_line(text.rstrip("\r\n"))
            if line is not None and line.source == host.ip:
                yield line, errors


LogIndex = dict[str, list[tuple[str, tuple[int, int, str]]]]


def log_index(logs: Path) -> LogIndex:
    """The log directory listed once: each base name (`<node>.log`, `<node>-err.log`) with its
    files and their rotation ranks."""
    try:
        names = sorted(p.name for p in logs.iterdir())
    except OSError as e:
        raise InputError(f"{logs}: cannot list the log directory ({e.strerror or e})") from e
    index: LogIndex = {}
    for name in names:
        at = name.find(".log")
        while at >= 0:
            base = name[:at + 4]
            rank = rotation_rank(base, name)
            if rank is not None:
                index.setdefault(base, []).append((name, rank))
            at = name.find(".log", at + 1)
    return index


def _node_files(logs: Path, host: Host, index: LogIndex | None = None
                ) -> list[tuple[Path, tuple[int, int, str], bool]]:
    """The node's log files and rotations: (path, rotation rank, is the error file)."""
    index = log_index(logs) if index is None else index
    return [(logs / name, rank, errors)
            for base, errors in zip(log_names(host.name), (False, True), strict=True)
            for name, rank in index.get(base, [])]


def _lines(path: Path) -> Iterator[str]:
    """The file's lines, decompressed and decoded; a read error ends them with a warning."""
    opener = OPENERS.get(path.suffix, open)
    number = 0
    try:
        f: IO[bytes]
        with opener(path, "rb") as f:
            for raw in f:
                number += 1
                yield raw.decode("utf-8", errors="replace")
    except READ_ERRORS as e:
        log.warning("%s: unreadable after line %d, the rest skipped (%s)", path, number,
                    getattr(e, "strerror", None) or e)


def pxe_release(tftp: Path, host: Host, builds: Mapping[str, str],
                present: set[str] | None = None, known: dict[str, Named] | None = None
                ) -> Named | None:
    """The config pxelinux would load for `host` and the release its default label boots.

    `builds`: release id -> short build id, for the releases in the tree. For many hosts:
    `present`, the names in pxelinux.cfg (listed once), and `known`, configs already read.
    """
    for name in config_names(host):
        if present is not None and name not in present:
            continue
        if known is not None and name in known:
            return known[name]
        path = tftp / CONFIG_DIR / name
        if not path.is_file():
            continue
        named = _named(path, f"{CONFIG_DIR}/{name}", builds)
        if known is not None:
            known[name] = named
        return named
    return None


def _named(path: Path, where: str, builds: Mapping[str, str]) -> Named:
    try:
        config = parse(path.read_text(errors="replace"), str(path))
        release = release_of(config.label(config.default).kernel)
    except (OSError, InputError) as e:
        log.warning("%s", e)
        return Named(where, None, None)
    if release is None:
        return Named(where, None, None)
    found = RELEASE_BUILD.search(release)
    return Named(where, release, builds.get(release) or (found[1] if found else None))


@boundary
def survey(inventory: Path | Inventory, logs: Path | None = None, tftp: Path | None = None
           ) -> list[NodeStatus]:
    """Every inventory host's status, from the log directory (default: the inventory's);
    `inventory`: its file, or one already read."""
    inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
    logs = logs if logs is not None else Path(inv.cluster.log_dir)
    if not logs.is_dir():
        raise InputError(f"{logs}: no such log directory")
    if tftp is not None and not tftp.is_dir():
        raise InputError(f"{tftp}: the TFTP root does not exist")
    builds = {r.id: r.build_id[:12]
              for r in (releases(tftp) if tftp is not None else [])}
    index = log_index(logs)
    present = _listed(tftp / CONFIG_DIR) if tftp is not None else set()
    known: dict[str, Named] = {}
    statuses = []
    for host in inv.hosts:
        named = pxe_release(tftp, host, builds, present, known) if tftp is not None else None
        statuses.append(judge(host, read_node(logs, host, index), named, tftp is not None))
    return statuses


def _listed(directory: Path) -> set[str]:
    try:
        return {p.name for p in directory.iterdir()}
    except OSError:
        return set()

