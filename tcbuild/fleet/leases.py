"""The DHCP server's own lease records: which MAC held which address, and when.

`tcbuild fleet` believes a discovered machine's report only when these records show the MAC it
reports holding the address the report came from, at the time it came (`Lease.held`). Three
formats, told apart by their lines:

- ISC dhcpd's lease file (`/var/lib/dhcp/dhcpd.leases`): `lease A { starts ...; ends ...;
  hardware ethernet M; ... }` blocks, appended as leases change; times in UTC
  (`starts 1 2026/12/07 10:00:00;`) or as `epoch N;` (`db-time-format local`).
- Kea's memfile (`/var/lib/kea/kea-leases4.csv`): a CSV whose header names its columns;
  `address`, `hwaddr`, `valid_lifetime` and `expire` (seconds since the epoch) are used.
- dnsmasq's lease file (`/var/lib/misc/dnsmasq.leases`): `EXPIRY MAC ADDRESS NAME CLIENT-ID`
  a line, rewritten whole as leases change: only the leases held now, each with when it ends
  (0: never) but not when it began. Such a record bears out a report from the day before its
  end (`DNSMASQ_WINDOW`): a machine waiting to be enrolled holds its lease and reports again
  every 10 minutes (bootlocal.sh), so its latest report lies there.

Every record is kept (a renewal adds one). Reads are bounded (the last `LIMIT` bytes of a
file: the newest records are at its end); a malformed record or line is skipped, never fatal;
a file that cannot be read is a warning. Pure parsing apart from `read_leases`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from ..config.values import MAC, normal_mac

log = logging.getLogger("tcbuild")

DHCPD_LEASES = Path("/var/lib/dhcp/dhcpd.leases")
KEA_LEASES = Path("/var/lib/kea/kea-leases4.csv")
DNSMASQ_LEASES = Path("/var/lib/misc/dnsmasq.leases")
DEFAULT_FILES = (DHCPD_LEASES, KEA_LEASES, KEA_LEASES.with_name(KEA_LEASES.name + ".2"),
                 DNSMASQ_LEASES)
"""Debian's places (the `.2` file: Kea's lease file cleanup keeps the older records there)."""
LIMIT = 16 * 1024 * 1024
SLACK = timedelta(seconds=60)
"""How far a line's time may lie outside its lease (the log host's and DHCP server's clocks)."""

BLOCK = re.compile(r"^lease (\d{1,3}(?:\.\d{1,3}){3}) \{(.*?)^\}", re.MULTILINE | re.DOTALL)
WHEN = re.compile(r"^\s*(starts|ends) (?:\d (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)|epoch (\d{1,12}));",
                  re.MULTILINE)
HARDWARE = re.compile(r"^\s*hardware ethernet ([0-9a-fA-F:]{17});", re.MULTILINE)
DNSMASQ = re.compile(r"^(\d{1,12}) ([0-9a-fA-F:]{17}) (\d{1,3}(?:\.\d{1,3}){3}) ", re.MULTILINE)
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)  # a dnsmasq lease that never ends (expiry 0)
DNSMASQ_WINDOW = timedelta(days=1)  # how far before its end a dnsmasq record bears out a report


@dataclass(frozen=True)
class Lease:
    """`mac` held `address` from `start` to `end` (aware, UTC)."""

    address: IPv4Address
    mac: str  # lower case, colon separated
    start: datetime
    end: datetime

    def held(self, address: IPv4Address, mac: str, when: datetime) -> bool:
        return (self.address == address and self.mac == mac
                and self.start - SLACK <= when <= self.end + SLACK)


def parse(text: str) -> list[Lease]:
    """The records of a dhcpd lease file or a Kea memfile, whichever `text` is."""
    if text.startswith("address,"):
        return list(parse_kea(text))
    if DNSMASQ.search(text):  # no line of a dhcpd lease file starts so
        return list(parse_dnsmasq(text))
    return list(parse_dhcpd(text))


def parse_dhcpd(text: str) -> Iterator[Lease]:
    for found in BLOCK.finditer(text):
        body = found[2]
        hardware = HARDWARE.search(body)
        times: dict[str, datetime] = {}
        for when in WHEN.finditer(body):
            try:
                times[when[1]] = (datetime.strptime(when[2], "%Y/%m/%d %H:%M:%S")
                                  .replace(tzinfo=UTC) if when[2]
                                  else datetime.fromtimestamp(int(when[3]), UTC))
            except (ValueError, OverflowError, OSError):
                break
        lease = _lease(found[1], hardware[1] if hardware else None, times.get("starts"),
                       times.get("ends"))
        if lease is not None:
            yield lease


def parse_kea(text: str) -> Iterator[Lease]:
    rows = csv.reader(text.splitlines())
    header = next(rows, [])
    try:
        at = {name: header.index(name) for name in ("address", "hwaddr", "valid_lifetime",
                                                    "expire")}
    except ValueError:
        return
    for row in rows:
        try:
            expire = datetime.fromtimestamp(int(row[at["expire"]]), UTC)
            start = expire - timedelta(seconds=int(row[at["valid_lifetime"]]))
        except (IndexError, ValueError, OverflowError, OSError):
            continue
        lease = _lease(row[at["address"]], row[at["hwaddr"]], start, expire)
        if lease is not None:
            yield lease


def parse_dnsmasq(text: str) -> Iterator[Lease]:
    for found in DNSMASQ.finditer(text):
        try:
            expiry = int(found[1])
            end = datetime.fromtimestamp(expiry, UTC) if expiry else FOREVER
        except (ValueError, OverflowError, OSError):
            continue
        start = end - DNSMASQ_WINDOW if expiry else datetime.fromtimestamp(0, UTC)
        lease = _lease(found[3], found[2], start, end)
        if lease is not None:
            yield lease


def _lease(address: str, mac: str | None, start: datetime | None,
           end: datetime | None) -> Lease | None:
    if mac is None or start is None or end is None or not MAC.match(mac) or end < start:
        return None
    try:
        return Lease(IPv4Address(address), normal_mac(mac), start, end)
    except ValueError:
        return None


def read_leases(paths: Iterable[Path]) -> list[Lease]:
    """Every record of the files that exist (the last `LIMIT` bytes of each)."""
    leases = []
    for path in paths:
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - LIMIT))
                data = f.read(LIMIT)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("%s: cannot read the lease file (%s)", path, e.strerror or e)
            continue
        text = data.decode("utf-8", errors="replace")
        if size > LIMIT:  # cut in the middle: from the first whole record on
            if path.suffix == ".csv" or ".csv." in path.name:
                header = _first_line(path)
                text = header + text[text.find("\n") + 1:]
            else:
                text = text[text.find("\nlease ") + 1:]
        leases += parse(text)
    return leases


def _first_line(path: Path) -> str:
    with path.open("rb") as f:
        return f.readline(4096).decode("utf-8", errors="replace")
