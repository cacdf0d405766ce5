"""Bootable hybrid ISO images of a build: planned, then written with pycdlib.

`plan_iso` decides everything an image holds (its files, the isolinux.cfg rendered from the
recipe's boot section exactly as for pxelinux, the volume id, the time stamped into it) without
touching the disk; `write_iso` writes a plan with pycdlib: ISO 9660 with Rock Ridge and Joliet,
isolinux as a no-emulation El Torito image with a boot info table and a boot catalog, and an
isohybrid MBR, so the same file boots as a CD and from a USB stick under BIOS.

For UEFI, a second El Torito entry (platform 0xEF) holds a FAT image (`fatimage`): syslinux.efi
as EFI/BOOT/BOOTX64.EFI, ldlinux.e64 and syslinux.cfg beside it (the same text as isolinux.cfg),
and the kernel and initrd (syslinux.efi reads only the file system it was loaded from, so they
are in the image twice). The isohybrid MBR's second partition (type 0xEF) is that same image: an
EFI system partition when the file is written to a USB stick. The file appears by rename (temp
file beside it, fsync) and the same plan gives the same bytes: pycdlib's clock is fixed to the
plan's time in UTC, the FAT image's time stamps too, and the MBR id and the FAT serial are
derived from the content.

Reading an official ISO (an input of `fetch`) is `isoread`'s job; building then writing one is
`pipeline.build_iso`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from time import gmtime, struct_time
from typing import Any, BinaryIO

import pycdlib
from pycdlib import dates, headervd, inplaceeditor, udf
from pycdlib import pycdlib as pycdlib_core

from ..atomic import write_file
from ..config.recipe import Recipe
from ..errors import InputError, boundary
from ..formats.manifest import file_sha256
from . import syslinux
from .fatimage import FatPlan, write_fat
from .pxelinux import for_recipe, render
from .syslinux import BOOT_DIR

ISOLINUX_DIR = f"{BOOT_DIR}/isolinux"
EFI_IMAGE = f"{BOOT_DIR}/efiboot.img"  # the FAT image of the UEFI El Torito entry
EFI_BOOT_DIR = "EFI/BOOT"  # inside it: the removable-media path UEFI firmware boots
EFI_LABEL = "TCBUILD_EFI"
MAX_EFI_IMAGE = 0xFFFF * 512  # El Torito counts an entry's 512-byte sectors in 16 bits
APPLICATION = "TCBUILD"
# Rock Ridge modes: those of a read-only medium, whatever the modes of the files on disk.
FILE_MODE, DIR_MODE = 0o100444, 0o040555


@dataclass(frozen=True)
class IsoFile:
    """One file of the image: where it goes (its Rock Ridge and Joliet path) and its content."""

    path: str  # e.g. "boot/vmlinuz64"
    source: Path | bytes  # a file to copy, or the bytes themselves


@dataclass(frozen=True)
class IsoPlan:
    """Everything an ISO holds; `write_iso` turns it into bytes."""

    volume_id: str
    epoch: int  # seconds since 1970: every time stamp in the image
    files: tuple[IsoFile, ...]
    boot_image: str = f"{ISOLINUX_DIR}/isolinux.bin"
    boot_catalog: str = f"{ISOLINUX_DIR}/boot.cat"
    efi: FatPlan | None = None  # the UEFI El Torito image's files, made into EFI_IMAGE

    @property
    def config(self) -> str:
        """The isolinux.cfg text."""
        data = self.file(f"{ISOLINUX_DIR}/isolinux.cfg").source
        return data.decode() if isinstance(data, bytes) else data.read_text()

    def file(self, path: str) -> IsoFile:
        return next(f for f in self.files if f.path == path)

    @property
    def directories(self) -> tuple[str, ...]:
        """Every directory, parents first."""
        found = {str(p) for f in self.files for p in PurePosixPath(f.path).parents}
        return tuple(sorted(found - {"."}))


def find_isolinux(directory: Path | None = None) -> dict[str, Path]:
    """isolinux.bin and ldlinux.c32 from `directory`, or Debian's usual places."""
    return syslinux.find(syslinux.ISO, directory)


def find_efi_loader(directory: Path | None = None) -> dict[str, Path]:
    """bootx64.efi (syslinux.efi) and ldlinux.e64 from `directory`, or Debian's usual places."""
    return syslinux.find(syslinux.EFI, directory)


def volume_id(recipe: Recipe) -> str:
    """The recipe's name in ISO 9660 d-characters: `game-server` -> `GAME_SERVER`."""
    return re.sub(r"[^A-Z0-9_]", "_", recipe.name.upper())[:32] or "TINYCORE"


@boundary
def plan_iso(recipe: Recipe, kernel: Path, initrd: Path, *, epoch: int,
             isolinux: Mapping[str, Path], efi: Mapping[str, Path] | None = None) -> IsoPlan:
    """The ISO of a built kernel + initrd booting the recipe's boot section. No I/O.

    With `efi` (bootx64.efi and ldlinux.e64) it boots under UEFI too."""
    kernel_at, initrd_at = f"{BOOT_DIR}/{kernel.name}", f"{BOOT_DIR}/{initrd.name}"
    if kernel.name == initrd.name:
        raise InputError(f"{recipe.path}: boot.initrd_name: '{initrd.name}' is the kernel's name")
    config = render(for_recipe(recipe, f"/{kernel_at}", f"/{initrd_at}"),
                    f"Generated by tcbuild from recipe {recipe.name}.").encode()
    fat = None
    if efi is not None:
        fat = FatPlan({f"{EFI_BOOT_DIR}/BOOTX64.EFI": efi["bootx64.efi"],
                       f"{EFI_BOOT_DIR}/LDLINUX.E64": efi["ldlinux.e64"],
                       f"{EFI_BOOT_DIR}/{syslinux.EFI_CONFIG.upper()}": config,
                       kernel_at: kernel, initrd_at: initrd}, EFI_LABEL, 0, epoch)
    return IsoPlan(volume_id(recipe), epoch, (
        IsoFile(kernel_at, kernel),
        IsoFile(initrd_at, initrd),
        IsoFile(f"{ISOLINUX_DIR}/isolinux.bin", isolinux["isolinux.bin"]),
        IsoFile(f"{ISOLINUX_DIR}/ldlinux.c32", isolinux["ldlinux.c32"]),
        IsoFile(f"{ISOLINUX_DIR}/isolinux.cfg", config),
    ), efi=fat)


def mbr_id(plan: IsoPlan) -> int:
    """The isohybrid MBR's disk id, from the content (pycdlib would pick a random one)."""
    h = hashlib.sha256(f"{plan.volume_id}\0{plan.epoch}\0".encode())
    efi = [IsoFile(f"{EFI_IMAGE}/{name}", source)
           for name, source in sorted(plan.efi.files.items())] if plan.efi else []
    for f in [*plan.files, *efi]:
        digest = (hashlib.sha256(f.source).hexdigest() if isinstance(f.source, bytes)
                  else file_sha256(f.source))
        h.update(f"{f.path}\0{digest}\0".encode())
    return int.from_bytes(h.digest()[:4], "little")


@boundary
def write_iso(plan: IsoPlan, target: Path) -> None:
    """Write the plan as a hybrid ISO at `target`, whole or not at all (see module doc)."""
    disk_id = mbr_id(plan)
    names = _iso9660_names(plan)
    with contextlib.ExitStack() as files:
        contents = list(plan.files)
        if plan.efi is not None:
            contents.append(IsoFile(EFI_IMAGE, _efi_image(plan.efi, disk_id, files)))
        iso = pycdlib.PyCdlib()
        with fixed_clock(plan.epoch):
            iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", sys_ident="LINUX",
                    vol_ident=plan.volume_id, app_ident_str=APPLICATION)
            files.callback(iso.close)
            for directory in plan.directories:
                iso.add_directory(names[directory], rr_name=PurePosixPath(directory).name,
                                  joliet_path=f"/{directory}", file_mode=DIR_MODE)
            for f in contents:
                if isinstance(f.source, bytes):
                    fp: BinaryIO = io.BytesIO(f.source)
                    length = len(f.source)
                else:
                    fp = files.enter_context(f.source.open("rb"))
                    length = f.source.stat().st_size
                iso.add_fp(fp, length, names[f.path], rr_name=PurePosixPath(f.path).name,
                           joliet_path=f"/{f.path}", file_mode=FILE_MODE)
            catalog, rr_catalog = names[plan.boot_catalog], PurePosixPath(plan.boot_catalog).name
            iso.add_eltorito(names[plan.boot_image], bootcatfile=catalog,
                             rr_bootcatname=rr_catalog, joliet_bootcatfile=f"/{plan.boot_catalog}",
                             boot_load_size=4, boot_info_table=True, media_name="noemul")
            if plan.efi is not None:  # a second entry: UEFI's, platform 0xEF
                iso.add_eltorito(names[EFI_IMAGE], bootcatfile=catalog, rr_bootcatname=rr_catalog,
                                 joliet_bootcatfile=f"/{plan.boot_catalog}", platform_id=0xEF,
                                 efi=True, media_name="noemul")
            iso.add_isohybrid(mbr_id=disk_id, efi=plan.efi is not None)
            _fixed_guids(iso, disk_id)
            write_file(target, iso.write_fp)


def _fixed_guids(iso: pycdlib.PyCdlib, disk_id: int) -> None:
    """The GPT of an EFI isohybrid layout: GUIDs from the disk id (pycdlib picks random ones),
    the same in the primary and the backup table."""
    hybrid = iso.isohybrid_mbr
    if hybrid is None or not hybrid.efi:
        return

    def guid(what: str) -> uuid.UUID:
        digest = hashlib.sha256(f"tcbuild gpt {disk_id:08x} {what}".encode()).digest()
        return uuid.UUID(bytes=digest[:16], version=4)

    for gpt in (hybrid.primary_gpt, hybrid.secondary_gpt):
        gpt.header.disk_guid = guid("disk")
        for n, part in enumerate(gpt.parts):
            part.part_guid = guid(f"partition {n}")


def _efi_image(fat: FatPlan, serial: int, files: contextlib.ExitStack) -> Path:
    """The FAT image of the UEFI entry, in a temporary directory that `files` removes."""
    if fat.size > MAX_EFI_IMAGE:
        raise InputError(f"the kernel and initrd ({fat.size >> 20} MiB with the EFI loader) do "
                         f"not fit an El Torito image (at most {MAX_EFI_IMAGE >> 20} MiB)")
    staging = Path(files.enter_context(tempfile.TemporaryDirectory(prefix="tcbuild-efi.")))
    image = staging / "efiboot.img"
    write_fat(FatPlan(fat.files, fat.label, serial, fat.epoch), image)
    return image


# -- reproducibility ---------------------------------------------------------------------------

_CLOCK_LOCK = threading.Lock()
_STAMPING = (pycdlib_core, headervd, dates, udf, inplaceeditor)  # modules calling time.time()


class _Clock:
    """What pycdlib sees as the `time` module: a fixed `time()`, and UTC as the local zone."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def time(self) -> float:
        return float(self.epoch)

    def localtime(self, seconds: float | None = None) -> struct_time:
        return gmtime(self.epoch if seconds is None else seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def fixed_clock(epoch: int) -> Iterator[None]:
    """pycdlib stamps the current local time into every date; make it `epoch` in UTC.

    One at a time in a process (the modules' `time` is swapped, then restored).
    """
    with _CLOCK_LOCK:
        saved = [getattr(module, "time") for module in _STAMPING]  # noqa: B009
        for module in _STAMPING:
            setattr(module, "time", _Clock(epoch))  # noqa: B010
        try:
            yield
        finally:
            for module, original in zip(_STAMPING, saved, strict=True):
                setattr(module, "time", original)  # noqa: B010


# -- ISO 9660 names ----------------------------------------------------------------------------

def _d_chars(text: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def _iso9660_file(path: str) -> str:
    """`core.hts.gz` -> `CORE_HTS.GZ;1` (level 3: one dot, at most 30 characters)."""
    stem, dot, ext = PurePosixPath(path).name.rpartition(".")
    stem, ext = (_d_chars(stem), _d_chars(ext)[:8]) if dot else (_d_chars(ext), "")
    return f"{stem[: 30 - len(ext)] or '_'}.{ext};1"


def _join(path: str, name: str) -> str:
    parent = PurePosixPath(path).parent
    return "/" + "/".join([*(_d_chars(p)[:31] for p in parent.parts), name])


def _iso9660_names(plan: IsoPlan) -> dict[str, str]:
    """Plan path -> ISO 9660 path; two paths on one name are refused."""
    names = {d: _join(d, _d_chars(PurePosixPath(d).name)[:31]) for d in plan.directories}
    names |= {f.path: _join(f.path, _iso9660_file(f.path)) for f in plan.files}
    names[plan.boot_catalog] = _join(plan.boot_catalog, _iso9660_file(plan.boot_catalog))
    if plan.efi is not None:
        names[EFI_IMAGE] = _join(EFI_IMAGE, _iso9660_file(EFI_IMAGE))
    seen: dict[str, str] = {}
    for path, name in names.items():
        if name.upper() in seen:
            raise InputError(f"'{path}' and '{seen[name.upper()]}' have the same ISO 9660 name "
                             f"{name}")
        seen[name.upper()] = path
    return names
