"""Which boot program a network-booting client gets: one rule set for every DHCP server.

A PXE client names its firmware's architecture in DHCP option 93 (RFC 4578: 0 BIOS, 7 and 9 x64
UEFI); iPXE names itself in the user class, option 77 ("iPXE"). The rules below are the single
source the dhcpd, Kea and dnsmasq configs are written from. They are ordered most specific
first: iPXE also sends option 93, and must get the HTTP script rather than a program that would
load iPXE again (the boot loop). A client that sends no option 93 (old PXE ROMs) gets the
default, pxelinux.0. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

PXELINUX = "pxelinux.0"
"""BIOS PXE: syslinux's network loader, at the TFTP root."""
BOOTX64_EFI = "bootx64.efi"
"""x64 UEFI: the network boot program at the TFTP root, reading the same pxelinux.cfg/."""
IPXE_SCRIPT = "boot.ipxe"
"""The iPXE script at the root of the published tree, fetched over HTTP from `http_url`."""
DEFAULT = PXELINUX
"""For a client that matches no rule (no option 93)."""

ARCH_OPTION = 93
USER_CLASS_OPTION = 77
IPXE_USER_CLASS = "iPXE"


class Client(StrEnum):
    """A class of boot client; the value names the class in the generated configs."""

    IPXE = "ipxe"
    UEFI_X64 = "uefi-x64"
    BIOS = "bios"


ARCHITECTURES: dict[Client, tuple[int, ...]] = {
    Client.UEFI_X64: (7, 9),
    Client.BIOS: (0,),
}
"""Option 93 values per class (iPXE is recognised by its user class instead)."""


@dataclass(frozen=True)
class BootRule:
    client: Client
    architectures: tuple[int, ...]  # option 93 values; () for iPXE, matched by user class
    file: str  # a file name in the TFTP root, or an http:// URL for iPXE


def boot_rules(http_url: str | None) -> tuple[BootRule, ...]:
    """The rules in match order; iPXE gets `<http_url>boot.ipxe` only when `http_url` is set."""
    rules = []
    if http_url:
        rules.append(BootRule(Client.IPXE, (), http_url + IPXE_SCRIPT))
    rules.append(BootRule(Client.UEFI_X64, ARCHITECTURES[Client.UEFI_X64], BOOTX64_EFI))
    rules.append(BootRule(Client.BIOS, ARCHITECTURES[Client.BIOS], PXELINUX))
    return tuple(rules)


def boot_file(client: Client, http_url: str | None) -> str:
    """The file a client of that class gets (an iPXE client without `http_url`: the default)."""
    for rule in boot_rules(http_url):
        if rule.client is client:
            return rule.file
    return DEFAULT
