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

Pure parsing and judging (`parse_line`, `scan`, `judge`, `render`); the files are read by
`logtail` (a node's log files, from their end) and `overview` (`survey`: every host, with the
config pxelinux would load for it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Any, TypeVar

from ..boot.pxelinux import mac_config_name
from ..config.inventory import Host

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
            "last_seen": iso(self.seen),
            "booted": iso(self.boot.time) if self.boot else None,
            "boot_seconds": self.boot.seconds if self.boot else None,
            "build": self.boot.build if self.boot else None,
            "release": self.boot.release if self.boot else None,
            "named": ({"config": self.named.config, "release": self.named.release}
                      if self.named else None),
            "last_error": ({"time": iso(self.error.time), "line": self.error.text}
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
            f"booted {iso(boot.time)}" if boot else f"seen {iso(n.seen)}",
            f"build {boot.build}" if boot else "build ?",
            f"release {(boot.release if boot else None) or '?'}",
            f"last error {iso(n.error.time)} {n.error.text}" if n.error else "no errors",
            f"({note})" if note else ""]


def iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None
