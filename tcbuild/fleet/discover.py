"""Machines the inventory does not know yet, as `tcbuild fleet` lists them (`new`).

A machine with no inventory entry boots `pxelinux.cfg/discovery` (see `config.discovery`),
and its bootlocal.sh logs one line of its hardware under the tag `tcbuild-discover`:

    build=0123456789ab cpus=2 cpu="QEMU Virtual CPU" mem_kb=2030000 vendor=QEMU
    product="Standard PC" serial="" nic=eth0,52:54:00:d2:3d:01,up disk=sda,10737418240

(one line; `overlays/gameserver/usr/local/sbin/tcbuild-discover` writes it). The log host files
such lines under `<log_dir>/unknown/` (`bootserver.rsyslog`), where anyone can write: a line
counts only when the DHCP server's own lease records (`leases`) show one of the MACs it reports
holding the address it came from, when it came, inside the discovery range. The machine is that
MAC; a MAC the inventory has (enrolled since) is not new. Pure parsing (`parse_report`) and
judging (`machines`) apart from the reading (`discovered`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ..bootserver.rsyslog import UNKNOWN_DIR
from ..config.discovery import REPORT_TAG, DiscoveryRange
from ..config.inventory import Inventory
from ..config.inventoryfile import load_inventory
from ..config.values import MAC, normal_mac
from ..errors import InputError, boundary
from .leases import DEFAULT_FILES, SLACK, Lease, read_leases
from .logtail import file_lines
from .view import TAG, Line, iso, parse_line

REPORT_MAX = 4096  # characters of a report line; past it, not a report
ITEMS_MAX = 64  # nic= and disk= pairs, each
PAIR = re.compile(r'([a-z_]{1,16})=("(?:[^"\\]|\\.){0,512}"|[A-Za-z0-9._:/,@+-]{0,512})(?: |$)')
NEW = "new"


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str
    state: str


@dataclass(frozen=True)
class Report:
    """What a machine said of itself; every value as it wrote it (text, never trusted)."""

    values: Mapping[str, str]  # build, cpus, cpu, mem_kb, vendor, product, serial, ...
    nics: tuple[Nic, ...]
    disks: tuple[tuple[str, int], ...]  # name, bytes

    def as_json(self) -> dict[str, Any]:
        return {**self.values, "nics": [{"name": n.name, "mac": n.mac, "state": n.state}
                                         for n in self.nics],
                "disks": [{"name": name, "bytes": size} for name, size in self.disks]}

    def summary(self) -> str:
        v = self.values
        parts = [f"{v.get('cpus', '?')} cpu {v.get('cpu', '?')}",
                 f"{int(v['mem_kb']) // 1024} MiB" if v.get("mem_kb", "").isdigit() else "",
                 " ".join(filter(None, (v.get("vendor"), v.get("product")))),
                 f"serial {v['serial']}" if v.get("serial") else "",
                 ", ".join(f"{n.name} {n.mac} {n.state}" for n in self.nics),
                 ", ".join(f"{name} {size // 10**9} GB" for name, size in self.disks)
                 or "no disk",
                 f"build {v['build']}" if v.get("build") else ""]
        return "; ".join(part for part in parts if part)


@dataclass(frozen=True)
class NewMachine:
    mac: str
    address: str
    first_seen: datetime
    last_seen: datetime
    report: Report

    def as_json(self) -> dict[str, Any]:
        """An element of `fleet --json`'s `new` list."""
        return {"name": None, "ip": self.address, "state": NEW, "mac": self.mac,
                "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
                "hardware": self.report.as_json()}

    def row(self) -> str:
        return (f"{self.mac}  {NEW}  {self.address}  first seen {iso(self.first_seen)}  "
                f"last seen {iso(self.last_seen)}  {self.report.summary()}")


def parse_report(text: str) -> Report | None:
    """The report in a line's text (`tcbuild-discover: build=...`), or None for anything else."""
    tag = TAG.match(text)
    if tag is None or tag["program"] != REPORT_TAG or len(text) > REPORT_MAX:
        return None
    body, at = text[tag.end():], 0
    values: dict[str, str] = {}
    nics: list[Nic] = []
    disks: list[tuple[str, int]] = []
    while at < len(body):
        found = PAIR.match(body, at)
        if found is None:
            return None
        at = found.end()
        key, value = found[1], found[2]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if key == "nic":
            parts = value.split(",")
            if len(parts) != 3 or not MAC.match(parts[1]) or len(nics) >= ITEMS_MAX:
                return None
            nics.append(Nic(parts[0], normal_mac(parts[1]), parts[2]))
        elif key == "disk":
            name, _, size = value.rpartition(",")
            if not name or not size.isdigit() or len(size) > 20 or len(disks) >= ITEMS_MAX:
                return None
            disks.append((name, int(size)))
        else:
            values.setdefault(key, value)
    if "build" not in values or not nics:
        return None
    return Report(values, tuple(nics), tuple(disks))


DAY = re.compile(r"\d{4}-\d\d-\d\d\.log")  # an unknown/ file's day (rsyslog's name for it)


@dataclass
class _Seen:
    address: str
    first: datetime
    last: datetime
    report: Report


def machines(lines: Iterable[Line], leases: Iterable[Lease], discovery: DiscoveryRange,
             known: set[str]) -> list[NewMachine]:
    """The machines whose reports the lease records bear out, by MAC; none the inventory has
    (`known`: its MACs). First and last seen: their first and last such report."""
    by_address: dict[str, list[Lease]] = {}
    for lease in leases:
        if lease.address in discovery and lease.mac not in known:
            by_address.setdefault(str(lease.address), []).append(lease)
    seen: dict[str, _Seen] = {}
    for line in lines:
        candidates = by_address.get(str(line.source))
        report = parse_report(line.text) if candidates and line.program == REPORT_TAG else None
        if report is None or candidates is None:
            continue
        macs = {nic.mac for nic in report.nics}
        holder = next((lease.mac for lease in candidates
                       if lease.mac in macs and lease.held(line.source, lease.mac, line.time)),
                      None)
        if holder is None:
            continue
        kept = seen.get(holder)
        if kept is None:
            seen[holder] = _Seen(str(line.source), line.time, line.time, report)
            continue
        kept.first = min(kept.first, line.time)
        if line.time >= kept.last:
            kept.last, kept.address, kept.report = line.time, str(line.source), report
    return [NewMachine(mac, s.address, s.first, s.last, s.report)
            for mac, s in sorted(seen.items())]


def unknown_lines(logs: Path, since: date | None = None) -> Iterable[Line]:
    """Every readable line of the files under `<logs>/unknown/` (rotated and compressed too);
    `since`: not those of a day before it (`YYYY-MM-DD.log...`)."""
    directory = logs / UNKNOWN_DIR
    first = since.isoformat() if since is not None else ""
    try:
        names = sorted(p.name for p in directory.iterdir() if p.is_file()
                       and not (DAY.match(p.name) and p.name[:10] < first))
    except FileNotFoundError:
        return
    except OSError as e:
        raise InputError(f"{directory}: cannot list the directory ({e.strerror or e})") from e
    for name in names:
        for text in file_lines(directory / name):
            line = parse_line(text.rstrip("\r\n"))
            if line is not None:
                yield line


@boundary
def discovered(inventory: Path | Inventory, logs: Path | None = None,
               leases: Iterable[Path] | None = None) -> list[NewMachine]:
    """The new machines (none when the inventory has no discovery range), from the log
    directory (default: the inventory's) and the lease files (default: Debian's);
    `inventory`: its file, or one already read."""
    inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
    if inv.cluster.discovery is None:
        return []
    logs = logs if logs is not None else Path(inv.cluster.log_dir)
    records = read_leases(DEFAULT_FILES if leases is None else leases)
    known = {host.mac for host in inv.hosts}
    starts = [lease.start for lease in records
              if lease.address in inv.cluster.discovery and lease.mac not in known]
    if not starts:  # no lease a report could be borne out by: no log to read
        return []
    # The days the leases cover (a day more: rsyslog names the file by its local date).
    since = (min(starts) - SLACK - timedelta(days=1)).astimezone(UTC).date()
    return machines(unknown_lines(logs, since), records, inv.cluster.discovery, known)
