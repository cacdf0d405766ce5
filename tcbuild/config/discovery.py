"""The discovery range: the addresses a machine the inventory does not know gets, briefly.

`[cluster] discovery = "10.1.1.200-10.1.1.250"` names it. Every DHCP config tcbuild writes
hands a client it does not know a short lease (`LEASE_SECONDS`) from the range and points its
boot loader at `pxelinux.cfg/discovery` (`CONFIG`), which boots the default image in report
mode (`KERNEL_ARG` on its kernel line): the machine logs one line of its hardware
(`REPORT_TAG`) and waits to be enrolled. Pure data and validation, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

CONFIG = "discovery"
"""The pxelinux config (and iPXE twin) an unknown machine boots, in pxelinux.cfg/."""
KERNEL_ARG = "tcbuild.discover"
"""On the kernel line of the discovery config: bootlocal.sh reports and waits."""
REPORT_TAG = "tcbuild-discover"
"""The syslog tag of the report line."""
LEASE_SECONDS = 300
"""An unknown machine's lease: short, so the range frees itself once it is enrolled."""
PXELINUX_CONFIGFILE = 209
"""PXELINUX's DHCP option naming its config file (RFC 5071); pxelinux.0 and syslinux.efi read
it from the firmware's cached reply (option 208, the magic, is not needed since PXELINUX 3.55)."""


@dataclass(frozen=True)
class DiscoveryRange:
    first: IPv4Address
    last: IPv4Address

    def __contains__(self, address: object) -> bool:
        return isinstance(address, IPv4Address) and self.first <= address <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_range(text: str, subnet: IPv4Network | None,
                taken: Iterable[tuple[str, IPv4Address]]) -> tuple[DiscoveryRange | None, str]:
    """The range in `text` ("A-B"), or None and what is wrong with it: both ends in `subnet`
    (neither its network nor its broadcast address), A <= B, and none of the `taken`
    addresses (what holds each, e.g. "internal_router") inside it."""
    first_text, dash, last_text = text.partition("-")
    try:
        if not dash:
            raise ValueError
        first, last = IPv4Address(first_text.strip()), IPv4Address(last_text.strip())
    except ValueError:
        return None, f"'{text}' is not an address range like '10.1.1.200-10.1.1.250'"
    if first > last:
        return None, f"'{text}' starts after it ends"
    if subnet is not None:
        for end in (first, last):
            if end not in subnet:
                return None, f"{end} is outside the internal subnet {subnet}"
            if end in (subnet.network_address, subnet.broadcast_address):
                return None, f"{end} is the internal subnet's network or broadcast address"
    found = DiscoveryRange(first, last)
    for holder, address in taken:
        if address in found:
            return None, f"{found} includes {address}, the address of {holder}"
    return found, ""
