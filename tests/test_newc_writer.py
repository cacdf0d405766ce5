"""The newc writer, checked by reading back and against the real GNU cpio and bsdtar."""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tcbuild import ArchiveError
from tcbuild.formats.newc import Entry, NewcWriter, read_entries

from .kit.requires import require_root, require_tool

# The listings are parsed; a UTF-8 C locale and UTC keep them stable (names, dates).
TOOL_ENV = {**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"}

REG, DIR, LNK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
CHR, BLK, FIFO = stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO
BUSYBOX = b"\x7fELF, not really busybox\n"  # 25 bytes: data padding needed
ODD = b"abcde"  # 5 bytes
NON_ASCII = "home/tc/café-☕"


def entry(name: str, mode: int, data: bytes | None = b"", *, uid: int = 0, gid: int = 0,
          nlink: int = 1, mtime: int = 0, ino: int = 0, rdev: tuple[int, int] = (0, 0)) -> Entry:
    return Entry(name, mode, uid, gid, nlink, mtime, len(data or b""), ino, rdev, data)


# (entry, the mode string `ls -l`, cpio -itv and bsdtar -tv print for it)
TABLE: list[tuple[Entry, str]] = [
    (entry(".", DIR | 0o755, nlink=2, ino=100), "drwxr-xr-x"),
    (entry("tmp", DIR | 0o1777, gid=50, nlink=2, ino=101), "drwxrwxrwt"),
    (entry("opt", DIR | 0o2775, gid=50, nlink=2, ino=102), "drwxrwsr-x"),
    (entry("dev", DIR | 0o755, nlink=2, ino=103), "drwxr-xr-x"),
    (entry("dev/console", CHR | 0o622, rdev=(5, 1), ino=104), "crw--w--w-"),
    (entry("dev/sda", BLK | 0o660, gid=6, rdev=(8, 0), ino=105), "brw-rw----"),
    (entry("dev/initctl", FIFO | 0o600, ino=106), "prw-------"),
    (entry("bin", DIR | 0o755, nlink=2, ino=107), "drwxr-xr-x"),
    (entry("bin/busybox", REG | 0o4755, BUSYBOX, mtime=1_700_000_000, ino=108), "-rwsr-xr-x"),
    (entry("bin/sh", LNK | 0o777, b"busybox", ino=109), "lrwxrwxrwx"),
    (entry("usr", DIR | 0o755, nlink=3, ino=110), "drwxr-xr-x"),
    (entry("usr/bin", DIR | 0o755, nlink=2, ino=111), "drwxr-xr-x"),
    # A hard-link group in GNU cpio's layout: the data on the last name.
    (entry("usr/bin/gzip", REG | 0o755, b"", nlink=3, mtime=5, ino=500), "-rwxr-xr-x"),
    (entry("usr/bin/gunzip", REG | 0o755, b"", nlink=3, mtime=5, ino=500), "-rwxr-xr-x"),
    (entry("usr/bin/zcat", REG | 0o755, b"#!gzip\n", nlink=3, mtime=5, ino=500), "-rwxr-xr-x"),
    (entry("home", DIR | 0o775, gid=50, nlink=3, ino=112), "drwxrwxr-x"),
    (entry("home/tc", DIR | 0o750, uid=1001, gid=50, nlink=2, ino=113), "drwxr-x---"),
    (entry("home/tc/.profile", REG | 0o644, b"export PS1\n", uid=1001, gid=50, ino=114),
     "-rw-r--r--"),
    (entry("home/tc/empty", REG | 0o600, b"", uid=1001, gid=50, ino=115), "-rw-------"),
    (entry("home/tc/odd", REG | 0o640, ODD, uid=1001, gid=50, ino=116), "-rw-r-----"),
    (entry(NON_ASCII, REG | 0o644, "déjà vu\n".encode(), uid=1001, gid=50, ino=117),
     "-rw-r--r--"),
]
ENTRIES = [e for e, _ in TABLE]
MODE_STRINGS = {e.name: text for e, text in TABLE}
GROUP = ("usr/bin/gzip", "usr/bin/gunzip", "usr/bin/zcat")
# Renumbered in write order; the three names of the group share the number of its first name.
NEW_INOS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 13, 13, 14, 15, 16, 17, 18, 19]


def write(entries: Iterable[Entry], **options: int | bool) -> bytes:
    out = io.BytesIO()
    with NewcWriter(out, **options) as writer:  # type: ignore[arg-type]
        for e in entries:
            writer.add(e)
    return out.getvalue()


def read(archive: bytes) -> list[Entry]:
    return list(read_entries(io.BytesIO(archive), source="test"))


def run(argv: list[str], *, stdin: bytes = b"", cwd: Path | None = None) -> str:
    done = subprocess.run(argv, input=stdin, cwd=cwd, env=TOOL_ENV, capture_output=True,
                          check=False)
    assert done.returncode == 0, f"{argv}: {done.stderr.decode(errors='replace')}"
    return done.stdout.decode()


# --- writing and reading back ----------------------------------------------------------------

def test_round_trip_keeps_everything_but_the_inode_numbers() -> None:
    back = read(write(ENTRIES))
    assert [dataclasses.replace(e, ino=0) for e in back] == [
        dataclasses.replace(e, ino=0) for e in ENTRIES]
    assert [e.ino for e in back] == NEW_INOS
    assert [e.ino for e in read(write(ENTRIES, renumber=False))] == [e.ino for e in ENTRIES]


def test_header_layout_matches_gnu_cpio() -> None:
    archive = write(ENTRIES[:1])
    header = archive[:110]
    assert re.fullmatch(rb"070701[0-9A-F]{104}", header)  # uppercase hex, like GNU cpio
    fields = [header[i : i + 8] for i in range(6, 110, 8)]
    assert fields[0] == b"00000001"  # ino
    assert fields[1] == b"000041ED"  # mode: directory 0755
    assert fields[7:9] == [b"00000000"] * 2  # devmajor, devminor
    assert fields[11] == b"00000002" and archive[110:112] == b".\0"  # namesize counts the NUL
    assert fields[12] == b"00000000"  # check
    assert archive[112:118] == b"070701"  # 110 + 2 is a multiple of 4: no name padding here
    # The trailer (110 + 11 + 3 bytes of padding), then nothing: no 512-byte blocks by default.
    assert archive.endswith(b"TRAILER!!!\0\0\0\0") and len(archive) == 112 + 124
    padded = write(ENTRIES[:1], pad_to=512)
    assert len(padded) == 512 and padded == archive + b"\0" * (512 - len(archive))


def test_every_entry_starts_on_four_bytes_and_data_is_padded() -> None:
    out = io.BytesIO()
    writer = NewcWriter(out)
    for e in ENTRIES:
        assert writer.written % 4 == 0 and writer.written == len(out.getvalue())
        writer.add(e)
    writer.close()
    assert writer.written == len(out.getvalue()) and writer.written % 4 == 0
    raw = out.getvalue()
    start = raw.index(b"bin/busybox\0")
    data_at = start + len(b"bin/busybox") + 1 + (-(110 + len(b"bin/busybox") + 1) % 4)
    assert raw[data_at : data_at + 28] == BUSYBOX + b"\0\0\0"  # 25 bytes + 3 of padding
    writer.close()  # idempotent
    assert out.getvalue() == raw


def test_context_manager_writes_the_trailer_only_on_success() -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), NewcWriter(out) as writer:
        writer.add(ENTRIES[0])
        raise RuntimeError("the build failed")
    assert b"TRAILER!!!" not in out.getvalue() and out.getvalue().startswith(b"070701")
    writer.close()
    assert out.getvalue().endswith(b"TRAILER!!!\0\0\0\0")
    with pytest.raises(ValueError, match="after close"):
        writer.add(ENTRIES[1])


def test_same_entries_same_bytes_whatever_the_source_inodes() -> None:
    first = write(ENTRIES)
    assert write(ENTRIES) == first
    moved = [dataclasses.replace(e, ino=e.ino * 7 + 12345) for e in ENTRIES]
    assert write(moved) == first
    assert write(moved, renumber=False) != write(ENTRIES, renumber=False)


# --- cross-checks with GNU cpio and bsdtar -----------------------------------------------------

LISTING = re.compile(
    r"(?P<mode>[-dlcbps][-rwxsStT]{9})\s+(?P<nlink>\d+)\s+(?P<uid>\d+)\s+(?P<gid>\d+)\s+"
    r"(?:(?P<major>\d+),\s*(?P<minor>\d+)|(?P<size>\d+))\s+"
    r"(?P<date>[A-Z][a-z]{2}\s+\d+\s+(?:\d{4}|\d\d:\d\d))\s(?P<name>.+)")


def parse_listing(text: str) -> dict[str, dict[str, str | int | tuple[int, int] | None]]:
    """`cpio -itv` / `bsdtar -tv` lines by name: mode string, numbers, device, link target."""
    rows: dict[str, dict[str, str | int | tuple[int, int] | None]] = {}
    for line in text.splitlines():
        m = LISTING.fullmatch(line)
        assert m, f"unparsed listing line: {line!r}"
        name, symlink, hardlink = m["name"], None, None
        if m["mode"].startswith("l"):
            name, symlink = name.split(" -> ")
        elif " link to " in name:
            name, hardlink = name.split(" link to ")
        rows[name] = {
            "mode": m["mode"], "nlink": int(m["nlink"]), "uid": int(m["uid"]),
            "gid": int(m["gid"]), "size": int(m["size"]) if m["size"] else None,
            "rdev": (int(m["major"]), int(m["minor"])) if m["major"] else None,
            "symlink": symlink, "hardlink": hardlink,
        }
    assert len(rows) == len(text.splitlines()), "a name listed twice"
    return rows


def expected_row(e: Entry, hardlink: str | None) -> dict[str, str | int | tuple[int, int] | None]:
    device = stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode)
    return {
        "mode": MODE_STRINGS[e.name], "nlink": e.nlink, "uid": e.uid, "gid": e.gid,
        "size": None if device else e.size, "rdev": e.rdev if device else None,
        "symlink": e.data.decode() if stat.S_ISLNK(e.mode) and e.data else None,
        "hardlink": hardlink,
    }


def test_gnu_cpio_lists_every_entry_as_written() -> None:
    require_tool("cpio", "cpio")
    listed = parse_listing(run(["cpio", "-itv", "--numeric-uid-gid", "--quiet"],
                               stdin=write(ENTRIES)))
    assert list(listed) == [e.name for e in ENTRIES]
    for e in ENTRIES:  # GNU cpio -t shows no hard links; nlink 3 and the sizes 0, 0, 7 are there
        assert listed[e.name] == expected_row(e, None), e.name
    assert [listed[name]["size"] for name in GROUP] == [0, 0, 7]


def test_bsdtar_lists_every_entry_and_the_hard_links() -> None:
    require_tool("bsdtar", "libarchive-tools")
    listed = parse_listing(run(["bsdtar", "-tv", "--numeric-owner", "-f", "-"],
                               stdin=write(ENTRIES)))
    assert list(listed) == [e.name for e in ENTRIES]
    for e in ENTRIES:
        hardlink = GROUP[0] if e.name in GROUP[1:] else None
        assert listed[e.name] == expected_row(e, hardlink), e.name


def extract_with_gnu_cpio(archive: bytes, into: Path) -> None:
    require_tool("cpio", "cpio")
    require_root("chown and mknod while extracting")
    into.mkdir()
    run(["cpio", "-idm", "--no-absolute-filenames", "--quiet"], stdin=archive, cwd=into)


@pytest.mark.root
def test_gnu_cpio_extracts_modes_owners_devices_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    extract_with_gnu_cpio(write(ENTRIES), root)
    for e in ENTRIES:
        st = (root / e.name).lstat()
        assert stat.filemode(st.st_mode) == MODE_STRINGS[e.name], e.name  # type, setuid, sticky
        assert (st.st_uid, st.st_gid) == (e.uid, e.gid), e.name
        if stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode):
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == e.rdev, e.name
        if stat.S_ISREG(e.mode):
            assert st.st_mtime == e.mtime, e.name
            if e.name not in GROUP:
                assert (root / e.name).read_bytes() == e.data, e.name
    assert (root / "bin/sh").readlink() == Path("busybox")
    group = [(root / name).stat() for name in GROUP]
    assert len({st.st_ino for st in group}) == 1 and group[0].st_nlink == 3
    assert all((root / name).read_bytes() == b"#!gzip\n" for name in GROUP)
    assert (root / "bin/busybox").stat().st_mode & stat.S_ISUID
    assert (root / "opt").stat().st_mode & stat.S_ISGID
    assert (root / "tmp").stat().st_mode & stat.S_ISVTX


@pytest.mark.root
@pytest.mark.parametrize("carrier", [0, 1, 2], ids=["data-on-first", "middle", "last"])
def test_a_hard_link_group_may_carry_its_data_on_any_name(tmp_path: Path, carrier: int) -> None:
    """The kernel links later names to the first and opens them without O_TRUNC; GNU cpio too."""
    names = ("a", "b", "c")
    entries = [entry(".", DIR | 0o755, nlink=2)] + [
        entry(name, REG | 0o644, b"shared\n" if i == carrier else b"", nlink=3, ino=9)
        for i, name in enumerate(names)]
    archive = write(entries)
    assert [e.size for e in read(archive)[1:]] == [7 if i == carrier else 0 for i in range(3)]
    extract_with_gnu_cpio(archive, tmp_path / "root")
    inodes = {(tmp_path / "root" / name).stat().st_ino for name in names}
    assert len(inodes) == 1
    assert all((tmp_path / "root" / name).read_bytes() == b"shared\n" for name in names)


@pytest.mark.root
def test_rewrites_gnu_cpio_output_byte_for_byte(tmp_path: Path) -> None:
    """`cpio -o -H newc --reproducible` (ino from 0, dev 0) read and rewritten unchanged."""
    require_tool("cpio", "cpio")
    require_root("chown and mknod while extracting")
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "a").write_bytes(b"hello\n")
    os.link(tree / "a", tree / "b")
    os.link(tree / "a", tree / "d" / "c")
    (tree / "odd").write_bytes(ODD)
    (tree / "odd").chmod(0o4755)
    os.chown(tree / "odd", 1001, 50)
    (tree / "s").symlink_to("a")
    os.mknod(tree / "console", CHR | 0o622, os.makedev(5, 1))
    os.mkfifo(tree / "fifo")
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    listing = "\n".join([".", *names]) + "\n"
    gnu = subprocess.run(["cpio", "-o", "-H", "newc", "--reproducible", "--quiet"], cwd=tree,
                         input=listing.encode(), capture_output=True, check=True).stdout
    entries = read(gnu)
    assert [e.size for e in entries if e.name in ("a", "b", "d/c")] == [0, 0, 6]  # GNU layout
    assert write(entries, renumber=False, pad_to=512) == gnu


MTREE = """#mtree
. type=dir mode=0755 uid=0 gid=0 time=0
./tmp type=dir mode=01777 uid=0 gid=50 time=0
./opt type=dir mode=02775 uid=0 gid=50 time=0
./dev type=dir mode=0755 time=0
./dev/console type=char device=native,5,1 mode=0622 time=0
./dev/sda type=block device=native,8,0 mode=0660 gid=6 time=0
./dev/initctl type=fifo mode=0600 time=0
./bin type=dir mode=0755 time=0
./bin/busybox type=file mode=04755 contents={busybox} time=1700000000
./bin/sh type=link link=busybox mode=0777 time=0
./usr type=dir mode=0755 time=0
./usr/bin type=dir mode=0755 time=0
./usr/bin/gzip type=file mode=0755 nlink=3 contents={gzip} time=5
./usr/bin/gunzip type=file mode=0755 nlink=3 contents={gzip} time=5
./usr/bin/zcat type=file mode=0755 nlink=3 contents={gzip} time=5
./home type=dir mode=0775 gid=50 time=0
./home/tc type=dir mode=0750 uid=1001 gid=50 time=0
./home/tc/odd type=file mode=0640 uid=1001 gid=50 contents={odd} time=0
./home/tc/empty type=file mode=0600 uid=1001 gid=50 size=0 time=0
./home/tc/caf\\303\\251 type=file mode=0644 uid=1001 gid=50 contents={odd} time=0
"""


def test_rewriting_a_bsdtar_archive_loses_nothing(tmp_path: Path) -> None:
    require_tool("bsdtar", "libarchive-tools")
    require_tool("cpio", "cpio")
    paths = {name: tmp_path / name for name in ("busybox", "gzip", "odd")}
    paths["busybox"].write_bytes(BUSYBOX)
    paths["gzip"].write_bytes(b"#!gzip\n")
    paths["odd"].write_bytes(ODD)
    (tmp_path / "spec").write_text(MTREE.format(**paths))
    base = subprocess.run(["bsdtar", "--format", "newc", "-cf", "-", f"@{tmp_path / 'spec'}"],
                          check=True, capture_output=True).stdout
    entries = read(base)
    group = [e for e in entries if e.name.startswith("./usr/bin/")]
    assert [e.size for e in group] == [7, 7, 7]  # bsdtar stores the data on every name
    assert len({e.ino for e in group}) == 1 and {e.nlink for e in group} == {3}
    rewritten = write(entries)
    assert [dataclasses.replace(e, ino=0) for e in read(rewritten)] == [
        dataclasses.replace(e, ino=0) for e in entries]
    listings = []
    for argv in (["cpio", "-itv", "--numeric-uid-gid", "--quiet"],
                 ["bsdtar", "-tv", "--numeric-owner", "-f", "-"]):
        before, after = run(argv, stdin=base), run(argv, stdin=rewritten)
        assert after == before, argv
        assert len(after.splitlines()) == len(entries)
        listings.append(parse_listing(after))
    gnu, bsd = listings
    assert "./home/tc/caf\u00e9" in gnu and gnu["./dev/console"]["rdev"] == (5, 1)
    assert gnu["./tmp"]["mode"] == "drwxrwxrwt" and gnu["./opt"]["mode"] == "drwxrwsr-x"
    assert bsd["./usr/bin/zcat"]["hardlink"] == "./usr/bin/gzip"


# --- validation ---------------------------------------------------------------------------------

FILE = entry("etc/motd", REG | 0o644, b"hi\n")


def change(**fields: object) -> Callable[[], list[Entry]]:
    return lambda: [dataclasses.replace(FILE, **fields)]  # type: ignore[arg-type]


def linked(*changes: dict[str, object], nlink: int = 2) -> Callable[[], list[Entry]]:
    first = entry("bin/a", REG | 0o755, b"", nlink=nlink, ino=7)
    return lambda: [first] + [dataclasses.replace(first, name=f"bin/{i}", **c)  # type: ignore[arg-type]
                              for i, c in enumerate(changes)]


MOTD = "etc/motd"
LINK_A = r"hard link of 'bin/a' \(source ino 7\)"


@pytest.mark.parametrize(
    ("entries", "name", "problem"),
    [
        (change(name=""), "", r"empty name"),
        (change(name="/etc/motd"), "/etc/motd", r"absolute name"),
        (change(name="etc/../../motd"), "etc/../../motd", r"name has a '\.\.' component"),
        (change(name=".."), "..", r"name has a '\.\.' component"),
        (change(name="etc/mo\0td"), "etc/mo\0td", r"name contains a NUL byte"),
        (change(name="TRAILER!!!"), "TRAILER!!!", r"TRAILER!!! is the end-of-archive marker"),
        (change(name="x" * 4096), "x" * 60 + "...", r"name is 4096 bytes, longer than 4095"),
        (change(uid=1 << 32), MOTD, r"uid 4294967296 does not fit a newc field"),
        (change(gid=-1), MOTD, r"gid -1 does not fit a newc field"),
        (change(mtime=1 << 33), MOTD, r"mtime 8589934592 does not fit"),
        (change(mode=REG | 0o644 | (1 << 32)), MOTD, r"mode 4295000484 does not fit"),
        (change(rdev=(0, 1 << 32)), MOTD, r"rdev minor 4294967296 does not fit"),
        (change(data=None), MOTD, r"no data for a regular file"),
        (change(size=4), MOTD, r"size 4 but 3 bytes of data"),
        (change(mode=0o644), MOTD, r"unknown file type in mode 0o644"),
        (change(mode=DIR | 0o755), MOTD, r"3 bytes of data given for a directory"),
        (change(mode=CHR | 0o600, rdev=(5, 1)), MOTD, r"3 bytes of data given for a character"),
        (change(mode=BLK | 0o600), MOTD, r"3 bytes of data given for a block device"),
        (change(mode=FIFO | 0o600), MOTD, r"3 bytes of data given for a fifo"),
        (change(mode=DIR | 0o755, data=None, size=9), MOTD, r"9 bytes of data given for a dir"),
        (change(mode=LNK | 0o777, data=None, size=0), MOTD, r"no data for a symlink"),
        (change(mode=LNK | 0o777, data=b"", size=0), MOTD, r"symlink with an empty target"),
        (change(mode=LNK | 0o777, data=b"a\0b", size=3), MOTD, r"symlink target contains a NUL"),
        (change(mode=LNK | 0o777, data=b"a" * 4096, size=4096), MOTD,
         r"symlink target is 4096 bytes, longer than 4095"),
        (linked({"mode": REG | 0o700}), "bin/0", rf"{LINK_A} with a different mode \(33216 vs "
         r"33261\)"),
        (linked({"uid": 1001}), "bin/0", rf"{LINK_A} with a different uid \(1001 vs 0\)"),
        (linked({"nlink": 3}), "bin/0", rf"{LINK_A} with a different nlink \(3 vs 2\)"),
        (linked({}, {}), "bin/1", r"hard link group of 'bin/a' \(source ino 7\) has more names "
         r"than its nlink 2"),
        (linked({"data": b"x", "size": 1}, {"data": b"y", "size": 1}, nlink=3), "bin/1",
         rf"{LINK_A} with different data from an earlier name"),
        (linked(nlink=3), "bin/a", r"hard link group \(source ino 7\) has nlink 3 but 1 "
         r"name\(s\) were written"),
    ],
)
def test_invalid_entries_name_the_entry(entries: Callable[[], list[Entry]], name: str,
                                        problem: str) -> None:
    out = io.BytesIO()
    writer = NewcWriter(out, renumber=False, target="initrd.cpio")
    steps = [functools.partial(writer.add, e) for e in entries()] + [writer.close]
    with pytest.raises(ArchiveError,
                       match=rf"^initrd\.cpio: entry {re.escape(repr(name))}: {problem}"):
        for step in steps:
            before = out.getvalue()
            step()
    assert out.getvalue() == before  # the failing step wrote nothing
    assert b"TRAILER!!!" not in out.getvalue()


def test_inode_must_fit_when_kept_and_renumbering_ignores_it() -> None:
    big = dataclasses.replace(FILE, ino=1 << 32)
    with pytest.raises(ArchiveError, match=r"'etc/motd': ino 4294967296 does not fit"):
        write([big], renumber=False)
    assert read(write([big]))[0].ino == 1


def test_the_same_data_on_several_names_of_a_group_is_accepted() -> None:
    """bsdtar writes a hard link's data on every name; the kernel rewrites the same bytes."""
    names = [entry(f"bin/{n}", REG | 0o755, b"same", nlink=2, ino=3) for n in "ab"]
    back = read(write(names))
    assert [e.data for e in back] == [b"same", b"same"] and back[0].ino == back[1].ino == 1


def test_bad_pad_to() -> None:
    with pytest.raises(ValueError, match="pad_to must be >= 0"):
        NewcWriter(io.BytesIO(), pad_to=-1)
