"""The newc reader against archives written by the real bsdtar, read across every segment."""

from __future__ import annotations

import gzip
import io
import stat
import subprocess
from pathlib import Path

import pytest

from tcbuild import ArchiveError, kernel_version
from tcbuild.formats.newc import iter_initramfs, read_entries

from .kit.requires import require_tool

SPEC = """#mtree
. type=dir mode=0755 uid=0 gid=0 time=0
./tmp type=dir mode=01777 uid=0 gid=50 time=0
./dev type=dir mode=0755 uid=0 gid=0 time=0
./dev/console type=char device=native,5,1 mode=0622 uid=0 gid=0 time=0
./bin type=dir mode=0755 uid=0 gid=0 time=0
./bin/tool type=file mode=04755 uid=0 gid=0 time=7 contents={blob}
./bin/sh type=link link=tool mode=0777 uid=0 gid=0 time=0
./home type=dir mode=0755 uid=1001 gid=50 time=0
"""


def bsdtar_newc(tmp_path: Path, spec: str) -> bytes:
    require_tool("bsdtar", "libarchive-tools")
    (tmp_path / "blob").write_bytes(b"#!/bin/sh\necho hi\n")
    (tmp_path / "spec").write_text(spec.format(blob=tmp_path / "blob"))
    return subprocess.run(["bsdtar", "--format", "newc", "-cf", "-", f"@{tmp_path / 'spec'}"],
                          check=True, capture_output=True).stdout


def test_reads_what_bsdtar_writes(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    archive.write_bytes(bsdtar_newc(tmp_path, SPEC))
    entries = {e.path: e for e in iter_initramfs(archive)}
    assert set(entries) == {".", "tmp", "dev", "dev/console", "bin", "bin/tool", "bin/sh", "home"}
    assert stat.S_IMODE(entries["tmp"].mode) == 0o1777 and entries["tmp"].gid == 50
    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    assert stat.S_IMODE(console.mode) == 0o622
    tool = entries["bin/tool"]
    assert tool.data == b"#!/bin/sh\necho hi\n" and tool.mode & stat.S_ISUID and tool.mtime == 7
    assert stat.S_ISLNK(entries["bin/sh"].mode) and entries["bin/sh"].data == b"tool"
    assert (entries["home"].uid, entries["home"].gid) == (1001, 50)


def test_reads_every_segment_where_bsdtar_stops_at_the_first(tmp_path: Path) -> None:
    first = bsdtar_newc(tmp_path, SPEC)
    second = bsdtar_newc(tmp_path, "#mtree\n./lib type=dir mode=0755 time=0\n"
                         "./lib/modules type=dir mode=0755 time=0\n"
                         "./lib/modules/6.6.8-tinycore64 type=dir mode=0755 time=0\n")
    plain = tmp_path / "plain.cpio"
    plain.write_bytes(first + b"\0" * 512 + second)  # zero padding between segments
    members = tmp_path / "core.gz"
    members.write_bytes(gzip.compress(first, mtime=0) + gzip.compress(second, mtime=0))
    for path in (plain, members):
        names = [e.path for e in iter_initramfs(path, data=False)]
        assert names[-1] == "lib/modules/6.6.8-tinycore64" and "bin/tool" in names
    listed = subprocess.run(["bsdtar", "-tf", str(members)], check=True, capture_output=True,
                            text=True).stdout
    assert "lib/modules" not in listed  # why tcbuild reads cpio itself
    assert kernel_version((members,)) == "6.6.8-tinycore64"


def test_kernel_version_needs_exactly_one(tmp_path: Path) -> None:
    archive = tmp_path / "core.gz"
    archive.write_bytes(gzip.compress(bsdtar_newc(tmp_path, SPEC)))
    with pytest.raises(ArchiveError, match=r"core\.gz: expected one lib/modules/<version>/ "
                       r"directory, found none"):
        kernel_version((archive,))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda a: a[:200], r"truncated cpio at byte \d+"),
        (lambda a: b"070707" + a[6:], r"bad cpio magic b'070707' at byte 0"),
        (lambda a: a[:6] + b"zzzzzzzz" + a[14:], r"malformed cpio header at byte 0"),
        (lambda a: a[:94] + b"00000001" + a[102:], r"cpio name without NUL at byte 0"),
        (lambda a: a[:94] + b"00FFFFFF" + a[102:], r"cpio name size 16777215 at byte 0"),
    ],
)
def test_damaged_archives_name_the_problem(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "bad.cpio"
    archive.write_bytes(damage(bsdtar_newc(tmp_path, SPEC)))
    with pytest.raises(ArchiveError, match=rf"{archive}: {message}"):
        list(iter_initramfs(archive))


def test_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(bsdtar_newc(tmp_path, SPEC))
    archive = tmp_path / "bad.gz"
    archive.write_bytes(good[:-8] + bytes([good[-8] ^ 0xFF]) + good[-7:])  # the CRC
    with pytest.raises(ArchiveError, match=r"bad\.gz: corrupt gzip data: CRC check failed"):
        list(iter_initramfs(archive))
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArchiveError, match=r"bad\.gz: corrupt gzip data: Compressed file ended"):
        list(iter_initramfs(archive))


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(b"PK\x03\x04 zip, not cpio")
    with pytest.raises(ArchiveError, match="not a gzip-compressed or plain cpio archive"):
        list(iter_initramfs(path))
    with pytest.raises(ArchiveError, match="bad cpio magic"):
        list(read_entries(io.BytesIO(b"123456" + b"0" * 200), source="s"))
