"""Tiny Core extensions (`.tcz`, squashfs 4.0) read straight into cpio entries, never unpacked."""

from __future__ import annotations

import stat
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ArchiveError, TcbuildError
from .newc import Entry

GZIP = 1
COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
BLOCK_SIZE = 4096
MKSQUASHFS = ["mksquashfs", "-b", "4k", "-comp", "gzip", "-no-xattrs", "-noappend", "-quiet",
              "-no-progress", "-all-root", "-processors", "1"]


def _open(source: Path | bytes, label: str) -> Any:
    """The squashfs image (a file, or its bytes), checked to be what Tiny Core loads: gzip,
    4 KiB blocks."""
    from PySquashfsImage import SquashFsImage  # loaded where used: `import tcbuild` stays light

    try:
        if isinstance(source, bytes):
            image = SquashFsImage.from_bytes(source)
        else:
            image = SquashFsImage.from_file(str(source))
    except Exception as e:  # the library raises bare errors on a bad superblock
        raise ArchiveError(f"{label}: not a squashfs image ({e})") from e
    compression = image.sblk.compression
    problem = None
    if compression != GZIP:
        kind = COMPRESSORS.get(compression, f"compressor {compression}")
        problem = f"{kind}-compressed; Tiny Core needs gzip (mksquashfs -comp gzip)"
    elif image.sblk.block_size != BLOCK_SIZE:
        problem = (f"{image.sblk.block_size // 1024} KiB blocks; Tiny Core needs 4 KiB "
                   "(mksquashfs -b 4k)")
    if problem:
        image.close()
        raise ArchiveError(f"{label}: {problem}")
    return image


def check_tcz(path: Path, label: str | None = None) -> None:
    """Raise unless `path` is a squashfs image Tiny Core can load (errors name `label`)."""
    _open(path, label or str(path)).close()


def read_tcz(path: Path | bytes, label: str | None = None) -> Iterator[Entry]:
    """Every entry below the squashfs root, as the extension's files appear in `/`.

    The root directory itself is skipped: its owner (often 1001:staff) must not reach `/`.
    Hard links inside an extension become separate files.
    """
    label = label or str(path)
    image = _open(path, label)
    try:
        for item in image:
            relative = item.path.lstrip("/")
            if not relative:
                continue
            yield _entry(item, relative, label)
    except (zlib.error, ValueError, OSError, IndexError, KeyError) as e:
        raise ArchiveError(f"{label}: corrupt squashfs image ({e})") from e
    finally:
        image.close()


def _entry(item: Any, relative: str, label: str) -> Entry:
    mode: int = item.mode
    data: bytes | None = None
    rdev = (0, 0)
    if stat.S_ISREG(mode):
        data = item.read_bytes()
    elif stat.S_ISLNK(mode):
        data = item.readlink().encode()
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        rdev = (item.major, item.minor)
    elif stat.S_ISSOCK(mode):
        raise ArchiveError(f"{label}: {relative}: a socket cannot go into an initramfs")
    return Entry(
        name=relative,
        mode=mode,
        uid=item.uid,
        gid=item.gid,
        nlink=2 if stat.S_ISDIR(mode) else 1,
        mtime=item.time,
        size=len(data) if data is not None else 0,
        ino=0,
        rdev=rdev,
        data=data,
    )


def pack_directory(source: Path, target: Path) -> None:
    """Make a `.tcz` from a directory as Tiny Core packs extensions, reproducibly."""
    command = [*MKSQUASHFS[:1], str(source), str(target), *MKSQUASHFS[1:],
               "-all-time", "0", "-mkfs-time", "0"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise TcbuildError("mksquashfs is not installed (apt-get install squashfs-tools)") from None
    except subprocess.CalledProcessError as e:
        raise TcbuildError(f"{source}: mksquashfs failed: {e.stderr.strip() or e}") from e
