"""`tcbuild doctor`: every external tool and file tcbuild can use, present or not."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..boot import syslinux
from ..bootserver import kea
from ..fleet.boottest import OVMF


@dataclass(frozen=True)
class Check:
    name: str
    package: str  # the Debian package that provides it
    needed_for: str
    found: str | None  # where, or None when missing


TOOLS = (
    ("mksquashfs", "squashfs-tools", "packing a local extension directory into a .tcz"),
    ("qemu-system-x86_64", "qemu-system-x86", "boot-test (and the tests)"),
    ("dhcpd", "isc-dhcp-server", "checking generated dhcpd.conf (the tests)"),
    ("kea-dhcp4", "kea-dhcp4-server", "checking generated Kea configs (the tests)"),
    ("dnsmasq", "dnsmasq-base", "checking generated dnsmasq configs (the tests)"),
    ("dhclient", "isc-dhcp-client", "live DHCP tests"),
    ("rsyslogd", "rsyslog", "checking generated rsyslog rules (the tests)"),
    ("nginx", "nginx-light", "serving the tree over HTTP (the generated site; the tests)"),
    ("cpio", "cpio", "cross-checks of images (the tests)"),
    ("bsdtar", "libarchive-tools", "cross-checks of images (the tests)"),
    ("xorriso", "xorriso", "cross-checks of ISO images (the tests)"),
    ("mformat", "mtools", "ISO output (the UEFI boot image)"),
    ("ipmitool", "ipmitool", "power: a host's BMC over IPMI (LAN, RMCP+)"),
    ("ipmi_sim", "openipmi", "a simulated BMC (the power tests)"),
    ("prometheus", "prometheus", "scraping fleet --serve's /metrics (the tests)"),
    ("chromium", "chromium", "loading fleet --serve's page in a browser (the tests)"),
    ("ssh", "openssh-client", "remote TFTP roots (--tftp ssh://host/path)"),
    ("rsync", "rsync", "remote TFTP roots (here and on every boot server)"),
    ("sshd", "openssh-server", "boot servers reached over SSH (the remote root tests)"),
)
FILES = (
    *((name, package, " and ".join(use for use, names in (("publish", syslinux.PXE),
                                                          ("ISO output",
                                                           (*syslinux.ISO, *syslinux.EFI)))
                                     if name in names), paths)
      for name, (paths, package) in syslinux.FILES.items()),
    ("libdhcp_ha.so", "kea-common", "Kea high availability (two boot servers)",
     (f"{kea.HOOKS_DIR}/libdhcp_ha.so",)),
    ("pxe-e1000.rom", "ipxe-qemu", "boot-test's network boot ROM",
     ("/usr/lib/ipxe/qemu/efi-e1000.rom", "/usr/lib/ipxe/qemu/pxe-e1000.rom")),
    ("OVMF_CODE.fd", "ovmf", "boot-test --firmware uefi (UEFI firmware for QEMU)",
     tuple(code for code, _ in OVMF)),
)


def checks() -> list[Check]:
    found = [Check(name, package, use, shutil.which(name) or shutil.which(name, path="/usr/sbin"))
             for name, package, use in TOOLS]
    for name, package, use, paths in FILES:
        where = next((p for p in paths if Path(p).is_file()), None)
        found.append(Check(name, package, use, where))
    return found
