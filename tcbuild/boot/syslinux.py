"""syslinux's boot files (Debian's pxelinux, isolinux, syslinux-efi, syslinux-common).

Each file is known by the name it is published under; it is found in a directory given by the
operator (under that name or Debian's), or in Debian's usual places.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import TcbuildError

BOOT_DIR = "boot"
"""Where an ISO keeps the kernel and initrd (official ISOs and ours alike)."""

FILES: dict[str, tuple[tuple[str, ...], str]] = {
    # name: (Debian's install paths, the package that ships it)
    "pxelinux.0": (("/usr/lib/PXELINUX/pxelinux.0", "/usr/lib/syslinux/pxelinux.0"), "pxelinux"),
    "isolinux.bin": (("/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/isolinux.bin"),
                     "isolinux"),
    "ldlinux.c32": (("/usr/lib/syslinux/modules/bios/ldlinux.c32",
                     "/usr/lib/syslinux/ldlinux.c32"), "syslinux-common"),
    # syslinux.efi under the name UEFI firmware looks for (the removable-media path's name)
    "bootx64.efi": (("/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi",), "syslinux-efi"),
    "ldlinux.e64": (("/usr/lib/syslinux/modules/efi64/ldlinux.e64",), "syslinux-common"),
}
BIOS_PXE = ("pxelinux.0", "ldlinux.c32")
"""BIOS network boot (ldlinux.c32 must come from the same syslinux build as pxelinux.0)."""
EFI = ("bootx64.efi", "ldlinux.e64")
"""x64 UEFI boot, from the network or a FAT file system (ldlinux.e64 beside the loader). It
reads pxelinux.cfg/ as pxelinux.0 does, or syslinux.cfg beside itself on a disk."""
PXE = (*BIOS_PXE, *EFI)
"""What a TFTP root needs."""
ISO = ("isolinux.bin", "ldlinux.c32")
"""What a bootable ISO needs for BIOS (it adds `EFI` for UEFI)."""
EFI_CONFIG = "syslinux.cfg"
"""The config syslinux.efi reads beside itself when it did not boot from the network."""


def package(name: str) -> str:
    """The Debian package that ships `name`."""
    return FILES[name][1]


def find(names: Iterable[str], directory: Path | None = None) -> dict[str, Path]:
    """Each of `names` from `directory`, or from Debian's usual places; one line if missing."""
    found = {}
    for name in names:
        defaults, source = FILES[name]
        if directory:  # the published name, else Debian's (syslinux.efi)
            candidates = [directory / n for n in dict.fromkeys([name, *(Path(p).name
                                                                        for p in defaults)])]
        else:
            candidates = [Path(p) for p in defaults]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            where = directory or ", ".join(defaults)
            raise TcbuildError(f"{name} not found in {where} (apt-get install {source})")
        found[name] = path
    return found
