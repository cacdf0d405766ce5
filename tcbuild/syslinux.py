"""syslinux's boot files (Debian's pxelinux, isolinux, syslinux-common): where they are found."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import TcbuildError

BOOT_DIR = "boot"
"""Where an ISO keeps the kernel and initrd (official ISOs and ours alike)."""

FILES: dict[str, tuple[tuple[str, ...], str]] = {
    # name: (Debian's install paths, the package that ships it)
    "pxelinux.0": (("/usr/lib/PXELINUX/pxelinux.0", "/usr/lib/syslinux/pxelinux.0"), "pxelinux"),
    "isolinux.bin": (("/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/isolinux.bin"),
                     "isolinux"),
    "ldlinux.c32": (("/usr/lib/syslinux/modules/bios/ldlinux.c32",
                     "/usr/lib/syslinux/ldlinux.c32"), "syslinux-common"),
}
PXE = ("pxelinux.0", "ldlinux.c32")
"""What a TFTP root needs (ldlinux.c32 must come from the same syslinux build)."""
ISO = ("isolinux.bin", "ldlinux.c32")
"""What a bootable ISO needs."""


def package(name: str) -> str:
    """The Debian package that ships `name`."""
    return FILES[name][1]


def find(names: Iterable[str], directory: Path | None = None) -> dict[str, Path]:
    """Each of `names` from `directory`, or from Debian's usual places; one line if missing."""
    found = {}
    for name in names:
        defaults, source = FILES[name]
        candidates = [directory / name] if directory else [Path(p) for p in defaults]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            where = directory or ", ".join(defaults)
            raise TcbuildError(f"{name} not found in {where} (apt-get install {source})")
        found[name] = path
    return found
