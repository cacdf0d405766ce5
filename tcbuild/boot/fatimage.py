"""FAT file system images (an EFI system partition, a UEFI El Torito image), reproducibly.

Written with GNU mtools (Debian `mtools`): `mformat` makes the file system inside a plain file
and `mcopy`/`mmd` fill it, with no loop device, no mount and no root. mtools was chosen over
dosfstools (whose `mkfs.fat` formats but cannot add files without a mount) and over a Python
FAT writer (none in Debian, and one more format engine to trust): it stamps SOURCE_DATE_EPOCH
as every time stamp (in the zone of TZ, here UTC) and takes the volume serial number as an
argument, so the same files and time give the same bytes. Its own config files are ignored.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InputError, TcbuildError

SECTOR = 512
CLUSTER = 4096  # what mformat picks for these sizes at most; the slack below covers the rest
SLACK = 512 * 1024  # FAT tables, directories, the reserved sectors
ALIGN = 1024 * 1024  # the image is a whole number of MiB


@dataclass(frozen=True)
class FatPlan:
    """Every file of the image by path ("EFI/BOOT/BOOTX64.EFI"), its label, serial and time."""

    files: Mapping[str, Path | bytes]
    label: str  # at most 11 characters
    serial: int  # the volume serial number (32 bits)
    epoch: int  # every time stamp in the image

    @property
    def directories(self) -> tuple[str, ...]:
        found = {str(p) for name in self.files for p in PurePosixPath(name).parents}
        return tuple(sorted(found - {"."}))

    @property
    def size(self) -> int:
        """The image's size in bytes: the files in whole clusters, plus slack, in whole MiB."""
        data = sum(-(-_size(source) // CLUSTER) * CLUSTER for source in self.files.values())
        data += CLUSTER * len(self.directories)
        return -(-(data + data // 50 + SLACK) // ALIGN) * ALIGN


def _size(source: Path | bytes) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


def _mtools(*args: str, epoch: int) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC", "MTOOLSRC": os.devnull,
           "MTOOLS_SKIP_CHECK": "1"}
    if shutil.which(args[0]) is None:
        raise TcbuildError(f"{args[0]} is not installed (apt-get install mtools)")
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise TcbuildError(f"{args[0]} failed: {detail[-1] if detail else done.returncode}")


def write_fat(plan: FatPlan, target: Path) -> None:
    """Write the image to `target` (a new file: the caller renames it into place)."""
    if len(plan.label) > 11:
        raise InputError(f"FAT label '{plan.label}' is longer than 11 characters")
    image = str(target)
    with target.open("xb") as f:
        f.truncate(plan.size)
    _mtools("mformat", "-i", image, "-T", str(plan.size // SECTOR), "-h", "64", "-s", "32",
            "-N", f"{plan.serial & 0xFFFFFFFF:08x}", "-v", plan.label, "::", epoch=plan.epoch)
    for directory in plan.directories:
        _mtools("mmd", "-i", image, f"::/{directory}", epoch=plan.epoch)
    with tempfile.TemporaryDirectory(prefix=".fat.", dir=target.parent) as staging:
        for n, (name, source) in enumerate(sorted(plan.files.items())):
            if isinstance(source, bytes):
                path = Path(staging) / str(n)
                path.write_bytes(source)
                source = path
            _mtools("mcopy", "-i", image, str(source), f"::/{name}", epoch=plan.epoch)
