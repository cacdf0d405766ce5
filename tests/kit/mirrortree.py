"""Test support: a deterministic stand-in Tiny Core mirror and a fault-injecting HTTP server.

``build_mirror(root)`` lays out a miniature mirror exactly like the real one
(``<root>/15.x/<build>/...``) using the real tools (``bsdtar`` for newc cpio
archives, ``mksquashfs`` for extensions, pycdlib for the release ISOs), so the
bytes are realistic but small.

``MirrorServer(root)`` serves such a tree on loopback and can be told to
misbehave for given paths (status codes, truncation, dropped connections,
stalls, corruption, oversize bodies, redirects).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pycdlib

__all__ = [
    "DEP_FILES",
    "EXTENSIONS",
    "FAULT_KINDS",
    "ISO_NAMES",
    "KERNEL_VERSIONS",
    "RELEASE",
    "MirrorServer",
    "MirrorTree",
    "build_mirror",
    "make_iso",
    "read_newc",
    "write_provides",
]

RELEASE = "15.x"
"""The major-release directory of the stand-in mirror."""

KERNEL_VERSIONS: dict[str, str] = {
    "x86_64/modules64.gz": "6.6.8-tinycore64",
    "x86/modules.gz": "6.6.8-tinycore",
    "x86/modules64.gz": "6.6.8-tinycore64",
}
"""Kernel version inside each modules archive, keyed by ``<build>/<file>``."""

_COMMON_EXTENSIONS: tuple[str, ...] = (
    "broken-chain",
    "cyc-a",
    "cyc-b",
    "dhcp",
    "filesystems-6.6.8-tinycore64",
    "libtirpc",
    "nfs-utils",
    "openssl",
    "rpcbind",
)

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "x86_64": _COMMON_EXTENSIONS,
    "x86": tuple(sorted((*_COMMON_EXTENSIONS, "filesystems-6.6.8-tinycore"))),
}
"""Extension names (without ``.tcz``) present in ``15.x/<build>/tcz/``."""

DEP_FILES: dict[str, bytes] = {
    "nfs-utils": b"rpcbind.tcz\nlibtirpc.tcz  \n\n \nfilesystems-KERNEL.tcz\t\n",
    "rpcbind": b"libtirpc.tcz\r\n\r\n",
    "cyc-a": b"cyc-b.tcz\n",
    "cyc-b": b"cyc-a.tcz\n",
    "broken-chain": b"rpcbind.tcz\nghost.tcz\n",
}
"""Exact ``NAME.tcz.dep`` bytes; extensions not listed have no ``.dep`` file."""

_EXT_VERSIONS: dict[str, str] = {
    "broken-chain": "1.0",
    "cyc-a": "1.0",
    "cyc-b": "1.0",
    "dhcp": "4.4.3-P1",
    "libtirpc": "1.3.4",
    "nfs-utils": "2.6.4",
    "openssl": "3.0.12",
    "rpcbind": "1.2.6",
}

ISO_NAMES: dict[str, str] = {"x86_64": "CorePure64-15.0.iso", "x86": "Core-15.0.iso"}
"""The release ISO of each build, in ``15.x/<build>/release/``: its own kernel and core in /boot."""

_SQUASHFS_OPTS: tuple[str, ...] = (
    "-b", "4k", "-comp", "gzip", "-no-xattrs", "-noappend", "-quiet", "-no-progress",
    "-all-time", "0", "-mkfs-time", "0", "-root-uid", "1001", "-root-gid", "50",
)  # fmt: skip

_GZIP_LEVEL = 6


# --------------------------------------------------------------------------- mirror tree


@dataclass(frozen=True)
class MirrorTree:
    """Description of a mirror built by :func:`build_mirror`."""

    root: Path
    kernel_versions: dict[str, str] = field(default_factory=lambda: dict(KERNEL_VERSIONS))
    extensions: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(EXTENSIONS))
    md5s: dict[str, str] = field(default_factory=dict)
    """md5 hex of every file that has a ``.md5.txt`` beside it, keyed by relative path."""
    release: str = RELEASE

    def path(self, rel: str) -> Path:
        """Return the absolute path of ``rel`` (relative to the mirror root)."""
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> bytes:
        """Return the bytes of the mirror file ``rel``."""
        return self.path(rel).read_bytes()

    def distribution_dir(self, build: str) -> str:
        """Relative directory of the release files for ``build`` ("x86_64" or "x86")."""
        return f"{self.release}/{build}/release/distribution_files"

    def tcz_dir(self, build: str) -> str:
        """Relative directory of the extensions for ``build`` ("x86_64" or "x86")."""
        return f"{self.release}/{build}/tcz"

    def iso(self, build: str) -> str:
        """Relative path of the release ISO for ``build`` (see :data:`ISO_NAMES`)."""
        return f"{self.release}/{build}/release/{ISO_NAMES[build]}"


@dataclass
class _Entry:
    """One archive member for the mtree spec fed to bsdtar."""

    path: str
    kind: str  # dir, file, link, char, block
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytes | None = None
    link: str | None = None
    device: tuple[int, int] | None = None
    hardlink_group: str | None = None  # entries sharing a group share an inode
    nlink: int = 1


def _md5(data: bytes) -> str:
    """Return the md5 hex digest of ``data``."""
    return hashlib.md5(data).hexdigest()


def _gzip(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0, no file name)."""
    return gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0)


def _filler(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes derived from ``seed``."""
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def _stand_in_kernel(name: str, version: str) -> bytes:
    """A few KB of deterministic bytes starting with ``b"STAND-IN KERNEL"``."""
    head = f"STAND-IN KERNEL {name} {version}\n".encode()
    return head + _filler(f"kernel:{name}:{version}", 4096 - len(head))


def _mtree_escape(text: str) -> str:
    """Escape a name or value for an mtree spec (octal escapes, like mtree(5))."""
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+,/@:~")
    return "".join(c if c in safe else "".join(f"\\{b:03o}" for b in c.encode()) for c in text)


def _mtree_spec(entries: list[_Entry], blob_names: dict[str, str]) -> str:
    """Render ``entries`` as a hierarchical mtree spec (names come out without "./")."""
    by_path = {e.path: e for e in entries}
    children: dict[str, list[str]] = {}
    for e in entries:
        if e.path == ".":
            continue
        parent = str(PurePosixPath(e.path).parent)
        if parent != "." and parent not in by_path:
            raise ValueError(f"missing parent directory entry for {e.path}")
        children.setdefault(parent, []).append(e.path)

    # Directory link counts like a real filesystem: 2 + number of subdirectories.
    for e in entries:
        if e.kind == "dir":
            subdirs = [c for c in children.get(e.path, []) if by_path[c].kind == "dir"]
            e.nlink = 2 + len(subdirs)

    lines = ["#mtree"]

    def line(e: _Entry, name: str) -> str:
        words = [
            _mtree_escape(name),
            f"type={e.kind}",
            f"mode={e.mode:04o}",
            f"uid={e.uid}",
            f"gid={e.gid}",
            "time=0.0",
            f"nlink={e.nlink}",
        ]
        if e.kind == "link":
            assert e.link is not None
            words.append(f"link={_mtree_escape(e.link)}")
        elif e.kind in ("char", "block"):
            assert e.device is not None
            words.append(f"device=native,{e.device[0]},{e.device[1]}")
        elif e.kind == "file":
            if e.path in blob_names:
                words.append(f"contents={_mtree_escape(blob_names[e.path])}")
            else:
                words.append("size=0")
        return " ".join(words)

    def walk(directory: str) -> None:
        for child in sorted(children.get(directory, [])):
            e = by_path[child]
            lines.append(line(e, PurePosixPath(child).name))
            if e.kind == "dir":  # a relative dir line descends into it
                walk(child)
                lines.append("..")

    if "." in by_path:
        lines.append(line(by_path["."], "."))
    walk(".")
    return "\n".join(lines) + "\n"


def read_newc(data: bytes) -> list[dict[str, Any]]:
    """Parse uncompressed newc cpio data into header dicts (plus ``name``, ``offset``, ``data``).

    Several concatenated archives (as in an initramfs) are read one after the other;
    NUL padding between them is skipped and trailers are not returned.
    """
    out: list[dict[str, Any]] = []
    fields = (
        *("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize"),
        *("devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check"),
    )
    off = 0
    while off < len(data):
        if data[off : off + 6] not in (b"070701", b"070702"):
            raise ValueError(f"bad newc magic at offset {off}")
        if off + 110 > len(data):
            raise ValueError(f"truncated newc header at offset {off}")
        hdr: dict[str, Any] = {
            k: int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i, k in enumerate(fields)
        }
        name_start = off + 110
        name = data[name_start : name_start + hdr["namesize"] - 1].decode()
        body = (name_start + hdr["namesize"] + 3) & ~3
        if body + hdr["filesize"] > len(data):
            raise ValueError(f"truncated newc member {name!r}")
        hdr["name"] = name
        hdr["offset"] = off
        hdr["data"] = data[body : body + hdr["filesize"]]
        off = (body + hdr["filesize"] + 3) & ~3
        if name == "TRAILER!!!":
            while off < len(data) and data[off] == 0:
                off += 1
            continue
        out.append(hdr)
    return out


def _renumber_inodes(archive: bytes, entries: list[_Entry]) -> bytes:
    """Give every member a deterministic inode (hard links share one) and st_dev 0:0.

    bsdtar's mtree reader copies st_ino/st_dev from the ``contents=`` files on
    disk (ignoring ``inode=``), which would make the bytes vary between runs.
    """
    groups = {e.path: e.hardlink_group for e in entries if e.hardlink_group}
    buf = bytearray(archive)
    next_ino = 1
    group_ino: dict[str, int] = {}
    for member in read_newc(archive):
        group = groups.get(member["name"])
        if group is not None and group in group_ino:
            ino = group_ino[group]
        else:
            ino = next_ino
            next_ino += 1
            if group is not None:
                group_ino[group] = ino
        off = member["offset"]
        buf[off + 6 : off + 14] = b"%08x" % ino
        buf[off + 6 + 8 * 7 : off + 6 + 8 * 9] = b"%08x%08x" % (0, 0)  # devmajor, devminor
    return bytes(buf)


def _make_cpio(entries: list[_Entry], work: Path) -> bytes:
    """Build an uncompressed newc cpio with the real ``bsdtar`` from an mtree spec."""
    work.mkdir(parents=True)
    cwd = work / "cwd"  # empty: bsdtar's mtree reader looks member names up on disk
    cwd.mkdir()
    blobs = work / "blobs"
    blobs.mkdir()
    blob_names: dict[str, str] = {}
    for i, e in enumerate(entries):
        if e.kind == "file" and e.data is not None:
            blob = blobs / f"{i:04d}"
            blob.write_bytes(e.data)
            blob_names[e.path] = str(blob)
    spec = work / "spec.mtree"
    spec.write_text(_mtree_spec(entries, blob_names))
    proc = subprocess.run(
        ["bsdtar", "--format", "newc", "-cf", "-", f"@{spec}"],
        cwd=cwd,
        capture_output=True,
        check=True,
    )
    return _renumber_inodes(proc.stdout, entries)


def _rootfs_entries(busybox: bytes, arch: str) -> list[_Entry]:
    """Members of a small but Tiny Core-like rootfs."""
    e: list[_Entry] = [_Entry(".", "dir", 0o755)]
    dirs = ("bin", "sbin", "etc", "etc/init.d", "dev", "lib", "usr", "usr/bin", "usr/sbin")
    e += [_Entry(d, "dir", 0o755) for d in (*dirs, "usr/local", "var", "root")]
    e += [
        _Entry("tmp", "dir", 0o1777, 0, 50),
        _Entry("opt", "dir", 0o2775, 0, 50),
        _Entry("home", "dir", 0o775, 0, 50),
        _Entry("home/tc", "dir", 0o755, 1001, 50),
        _Entry("bin/busybox", "file", 0o755, data=busybox),
        _Entry("bin/sh", "link", 0o777, link="busybox"),
        _Entry("bin/ls", "link", 0o777, link="busybox"),
        _Entry("sbin/init", "link", 0o777, link="../bin/busybox"),
        _Entry("dev/console", "char", 0o622, device=(5, 1)),
        _Entry("dev/null", "char", 0o666, device=(1, 3)),
        _Entry("dev/ttyS0", "char", 0o660, device=(4, 64)),
        _Entry("dev/sda", "block", 0o660, device=(8, 0)),
        _Entry(
            "bin/su-standin",
            "file",
            0o4755,
            data=b'#!/bin/sh\n# stand-in for a setuid binary\nexec /bin/busybox su "$@"\n',
        ),
        _Entry(
            "etc/passwd",
            "file",
            0o644,
            data=(
                b"root:x:0:0:root:/root:/bin/sh\n"
                b"lp:x:7:7:lp:/var/spool/lpd:/bin/sh\n"
                b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                b"tc:x:1001:50:Linux User,,,:/home/tc:/bin/sh\n"
            ),
        ),
        _Entry(
            "etc/group",
            "file",
            0o644,
            data=b"root:x:0:\nlp:x:7:lp\nstaff:x:50:\nnogroup:x:65534:\n",
        ),
        _Entry("etc/standin-arch", "file", 0o644, data=f"{arch}\n".encode()),
        _Entry("etc/ld.so.conf", "file", 0o644, data=b"/usr/local/lib\n"),
        _Entry(
            "etc/init.d/tc-config",
            "file",
            0o755,
            data=b"#!/bin/sh\n# stand-in for Tiny Core's boot configuration script\n"
            b"echo 'tc-config stand-in'\n",
        ),
        _Entry(
            "opt/bootlocal.sh",
            "file",
            0o775,
            0,
            50,
            data=b"#!/bin/sh\n# put other system startup commands here\n",
        ),
        # GNU cpio style hard link (as in real Tiny Core images): same inode,
        # nlink=2, data stored only with the last member of the group.
        _Entry("usr/bin/pair-a", "file", 0o755, hardlink_group="pair", nlink=2),
        _Entry(
            "usr/bin/pair-b",
            "file",
            0o755,
            data=b"#!/bin/sh\necho hard-linked pair\n",
            hardlink_group="pair",
            nlink=2,
        ),
        _Entry(
            "home/tc/.profile",
            "file",
            0o644,
            1001,
            50,
            data=b'# ~/.profile: stand-in\nexport PATH="$HOME/.local/bin:$PATH"\n',
        ),
    ]
    return e


def _modules_entries(version: str) -> list[_Entry]:
    """Members of a stand-in modules archive for kernel ``version``."""
    base = f"lib/modules/{version}"
    e = [
        _Entry(d, "dir", 0o755)
        for d in (
            "lib",
            "lib/modules",
            base,
            f"{base}/kernel",
            f"{base}/kernel/fs",
            f"{base}/kernel/fs/nfs",
            f"{base}/kernel/fs/squashfs",
        )
    ]
    for mod in ("nfs", "squashfs"):
        head = f"STAND-IN MODULE {mod} {version}\n".encode()
        e.append(
            _Entry(
                f"{base}/kernel/fs/{mod}/{mod}.ko",
                "file",
                0o644,
                data=head + _filler(f"module:{mod}:{version}", 512),
            )
        )
    e.append(
        _Entry(
            f"{base}/modules.dep",
            "file",
            0o644,
            data=b"kernel/fs/nfs/nfs.ko:\nkernel/fs/squashfs/squashfs.ko:\n",
        )
    )
    return e


def _extension_files(name: str) -> dict[str, tuple[int, bytes | str]]:
    """Files of a stand-in extension: rel path -> (mode, bytes or symlink target as str)."""
    files: dict[str, tuple[int, bytes | str]] = {
        f"usr/local/bin/{name}-standin": (
            0o755,
            f"#!/bin/sh\necho '{name} stand-in'\n".encode(),
        ),
        f"usr/local/share/doc/{name}/README": (
            0o644,
            f"Stand-in extension {name} for tcbuild tests.\n".encode(),
        ),
    }
    if name.startswith("filesystems-"):
        version = name.removeprefix("filesystems-")
        ko = f"usr/local/lib/modules/{version}/kernel/fs/nfsd/nfsd.ko.gz"
        files[ko] = (0o644, _gzip(f"STAND-IN MODULE nfsd {version}\n".encode()))
    if name == "dhcp":  # what the example's bootlocal.sh runs (the real one is ISC's dhclient)
        files["usr/local/sbin/dhclient"] = (0o755, b"#!/bin/sh\necho 'dhclient stand-in'\n")
    if name == "openssl":
        files["usr/local/lib/libssl.so.3"] = (0o755, _filler("libssl", 1024))
        files["usr/local/lib/libssl.so"] = (0o777, "libssl.so.3")
    return files


def _make_tcz(
    name: str, work: Path, extra_files: dict[str, tuple[int, bytes | str]] | None = None
) -> tuple[bytes, list[str]]:
    """Build ``name.tcz`` with the real mksquashfs; return its bytes and its .list lines.

    ``extra_files`` (same shape as :func:`_extension_files`) are added to the stand-in files.
    """
    src = work / f"{name}.src"
    src.mkdir(parents=True)
    src.chmod(0o755)  # the root directory's mode would otherwise follow the umask
    files = {**_extension_files(name), **(extra_files or {})}
    pseudo: list[str] = []
    dirs: set[str] = set()
    for rel, (mode, payload) in sorted(files.items()):
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        for parent in PurePosixPath(rel).parents:
            if str(parent) != ".":
                dirs.add(str(parent))
        if isinstance(payload, str):
            p.symlink_to(payload)
        else:
            p.write_bytes(payload)
        pseudo.append(f"{rel} m {mode:o} 0 0")
    # Ownership/modes come from pseudo definitions so the image does not depend on
    # the uid or umask of whoever runs the tests.
    pseudo += [f"{d} m 755 0 0" for d in sorted(dirs)]
    pseudo_file = work / f"{name}.pseudo"
    pseudo_file.write_text("\n".join(pseudo) + "\n")
    out = work / f"{name}.tcz"
    subprocess.run(
        ["mksquashfs", str(src), str(out), *_SQUASHFS_OPTS, "-pf", str(pseudo_file)],
        capture_output=True,
        check=True,
    )
    return out.read_bytes(), sorted(files)


def _info(name: str, size: int) -> bytes:
    """A ``NAME.tcz.info`` in the usual Tiny Core layout."""
    version = _EXT_VERSIONS.get(name, name.removeprefix("filesystems-"))
    return (
        f"Title:          {name}.tcz\n"
        f"Description:    Stand-in {name} extension for tcbuild tests\n"
        f"Version:        {version}\n"
        f"Author:         tcbuild tests\n"
        f"Original-site:  http://127.0.0.1/\n"
        f"Copying-policy: MIT\n"
        f"Size:           {max(1, size // 1024)}K\n"
        f"Extension_by:   tcbuild\n"
        f"Tags:           standin test\n"
        f"Comments:       Generated by tests/kit/mirrortree.py\n"
        f"Change-log:     ----\n"
        f"Current:        2024/01/01 first version\n"
    ).encode()


def make_iso(boot: dict[str, bytes], volume_id: str) -> bytes:
    """An ISO laid out like Tiny Core's own (Rock Ridge and Joliet, ``/boot/<name>`` for each of
    ``boot``, an ``isolinux.cfg`` naming them), not bootable: nothing here runs isolinux.

    Every time stamp is 2024-01-01 UTC, so the bytes are the same on every call.
    """
    from tcbuild.boot.iso import fixed_clock  # pycdlib stamps the current local time otherwise

    kernel = next(name for name in boot if name.startswith("vmlinuz"))
    initrd = ",".join(f"/boot/{name}" for name in boot if name != kernel)
    files = {**boot, "isolinux/isolinux.cfg": (
        f"display boot.msg\ndefault microcore\nlabel microcore\n\tkernel /boot/{kernel}\n"
        f"\tinitrd {initrd}\n\tappend loglevel=3\n").encode()}
    iso = pycdlib.PyCdlib()
    with fixed_clock(1704067200):
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=volume_id)
        iso.add_directory("/BOOT", rr_name="boot", joliet_path="/boot")
        iso.add_directory("/BOOT/ISOLINUX", rr_name="isolinux", joliet_path="/boot/isolinux")
        for rel, data in files.items():
            stem, _, ext = PurePosixPath(rel).name.upper().replace("-", "_").partition(".")
            name = f"/BOOT/{'ISOLINUX/' if '/' in rel else ''}{stem}.{ext.replace('.', '_')};1"
            iso.add_fp(io.BytesIO(data), len(data), name, rr_name=PurePosixPath(rel).name,
                       joliet_path=f"/boot/{rel}")
        out = io.BytesIO()
        iso.write_fp(out)
        iso.close()
    return out.getvalue()


def _write(root: Path, rel: str, data: bytes, md5s: dict[str, str] | None = None) -> None:
    """Write ``data`` to ``root/rel``; with ``md5s``, also write ``rel.md5.txt``."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if md5s is not None:
        digest = _md5(data)
        md5s[rel] = digest
        (root / f"{rel}.md5.txt").write_bytes(f"{digest}  {path.name}\n".encode())


def build_mirror(root: Path, *, busybox: Path = Path("/bin/busybox")) -> MirrorTree:
    """Create a deterministic stand-in Tiny Core mirror under ``root`` and describe it.

    Existing files of the same names are overwritten; every call yields the same bytes.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bb = busybox.read_bytes()
    md5s: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mirrortree-") as tmp:
        work = Path(tmp)

        def cpio_gz(tag: str, entries: list[_Entry]) -> bytes:
            return _gzip(_make_cpio(entries, work / tag))

        rootfs = {arch: cpio_gz(f"rootfs-{arch}", _rootfs_entries(bb, arch)) for arch in EXTENSIONS}
        modules = {
            key: cpio_gz(key.replace("/", "-"), _modules_entries(ver))
            for key, ver in KERNEL_VERSIONS.items()
        }

        d64 = f"{RELEASE}/x86_64/release/distribution_files"
        _write(root, f"{d64}/vmlinuz64", _stand_in_kernel("vmlinuz64", "6.6.8-tinycore64"), md5s)
        _write(root, f"{d64}/rootfs64.gz", rootfs["x86_64"], md5s)
        _write(root, f"{d64}/modules64.gz", modules["x86_64/modules64.gz"], md5s)
        core64 = rootfs["x86_64"] + modules["x86_64/modules64.gz"]
        _write(root, f"{d64}/corepure64.gz", core64, md5s)

        d32 = f"{RELEASE}/x86/release/distribution_files"
        _write(root, f"{d32}/vmlinuz", _stand_in_kernel("vmlinuz", "6.6.8-tinycore"), md5s)
        _write(root, f"{d32}/vmlinuz64", _stand_in_kernel("vmlinuz64", "6.6.8-tinycore64"), md5s)
        _write(root, f"{d32}/rootfs.gz", rootfs["x86"], md5s)
        _write(root, f"{d32}/modules.gz", modules["x86/modules.gz"], md5s)
        _write(root, f"{d32}/modules64.gz", modules["x86/modules64.gz"], md5s)
        _write(root, f"{d32}/core.gz", rootfs["x86"] + modules["x86/modules.gz"], md5s)
        iso64 = make_iso({"vmlinuz64": root.joinpath(d64, "vmlinuz64").read_bytes(),
                          "corepure64.gz": core64}, "CorePure64")
        _write(root, f"{RELEASE}/x86_64/release/{ISO_NAMES['x86_64']}", iso64, md5s)
        iso32 = make_iso({"vmlinuz": root.joinpath(d32, "vmlinuz").read_bytes(),
                          "core.gz": rootfs["x86"] + modules["x86/modules.gz"]}, "Core")
        _write(root, f"{RELEASE}/x86/release/{ISO_NAMES['x86']}", iso32, md5s)

        tcz_work = work / "tcz"
        built: dict[str, tuple[bytes, list[str]]] = {}
        for names in EXTENSIONS.values():
            for name in names:
                if name not in built:
                    built[name] = _make_tcz(name, tcz_work)

    for build, names in EXTENSIONS.items():
        _write_tcz_dir(root, f"{RELEASE}/{build}/tcz", names, built, md5s)

    return MirrorTree(root=root, md5s=md5s)


def _write_tcz_dir(
    root: Path,
    tdir: str,
    names: tuple[str, ...],
    built: dict[str, tuple[bytes, list[str]]],
    md5s: dict[str, str],
) -> None:
    """Write the extensions ``names`` (from ``built``) with their side files and md5.db.gz."""
    index: list[str] = []
    for name in sorted(names):
        data, listing = built[name]
        _write(root, f"{tdir}/{name}.tcz", data, md5s)
        _write(root, f"{tdir}/{name}.tcz.info", _info(name, len(data)))
        _write(root, f"{tdir}/{name}.tcz.list", "".join(f"{p}\n" for p in listing).encode())
        dep = root / tdir / f"{name}.tcz.dep"
        if name in DEP_FILES:
            _write(root, f"{tdir}/{name}.tcz.dep", DEP_FILES[name])
        elif dep.exists():
            dep.unlink()
        index.append(f"{md5s[f'{tdir}/{name}.tcz']}  {name}.tcz\n")
    _write(root, f"{tdir}/md5.db.gz", _gzip("".join(index).encode()))
    write_provides(root / tdir)


def write_provides(tcz_dir: Path) -> None:
    """``provides.db`` (and ``.gz``) from the ``.tcz.list`` files of a directory, as the real
    mirror has it: records separated by a blank line, an extension's name then its files."""
    records = [f"{listing.name.removesuffix('.list')}\n{listing.read_text()}"
               for listing in sorted(tcz_dir.glob("*.tcz.list"))]
    text = "\n".join(records).encode()
    (tcz_dir / "provides.db").write_bytes(text)
    (tcz_dir / "provides.db.gz").write_bytes(_gzip(text))


# --------------------------------------------------------------------------- HTTP server

FAULT_KINDS = frozenset({"status", "truncate", "drop", "stall", "corrupt", "oversize", "redirect"})
"""Fault kinds accepted by :meth:`MirrorServer.fail`."""


@dataclass
class _Fault:
    """A registered fault and how many more requests it applies to."""

    kind: str
    remaining: int | None
    options: dict[str, Any]


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its :class:`MirrorServer` and stays quiet."""

    daemon_threads = True
    mirror: MirrorServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow handler errors (clients hanging up mid-response are expected)."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files under the mirror root, applying registered faults."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Do not log requests."""

    def setup(self) -> None:
        """Track the connection so the server can close it on shutdown."""
        super().setup()
        self.server.mirror._track(self.connection, add=True)

    def finish(self) -> None:
        """Untrack the connection."""
        try:
            super().finish()
        finally:
            self.server.mirror._track(self.connection, add=False)

    def do_GET(self) -> None:
        """Handle GET."""
        self._serve(head=False)

    def do_HEAD(self) -> None:
        """Handle HEAD."""
        self._serve(head=True)

    # -- helpers -----------------------------------------------------------------

    def _send(
        self,
        code: int,
        body: bytes,
        *,
        head: bool,
        length: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send status, headers (always with Content-Length) and, unless HEAD, ``body``."""
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.wfile.flush()

    def _not_found(self, head: bool) -> None:
        """Answer 404."""
        self._send(404, b"404 Not Found\n", head=head)

    def _serve(self, head: bool) -> None:
        """Resolve the path, record it, apply any fault, and answer."""
        mirror = self.server.mirror
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        mirror._record(self.command, rel)
        fault = mirror._take_fault(rel)
        body = mirror._lookup(rel)

        if fault is None:
            if body is None:
                self._not_found(head)
            else:
                self._send(200, body, head=head)
            return

        kind, opts = fault.kind, fault.options
        if kind == "drop":
            self.close_connection = True
            return
        if kind == "status":
            code = int(opts.get("code", 500))
            msg = f"{code} injected fault\n".encode()
            self._send(code, msg, head=head)
            return
        if kind == "redirect":
            location = str(opts["location"])
            self._send(302, b"302 Found\n", head=head, headers={"Location": location})
            return
        if body is None:  # body faults need a body; fall back to a plain 404
            self._not_found(head)
            return
        if kind == "stall":
            self._stall(body, head, float(opts.get("seconds", 5.0)))
            return
        if head:  # remaining faults only alter the body
            self._send(200, body, head=True)
            return
        if kind == "truncate":
            self._send(200, body[: len(body) // 2], head=False, length=len(body))
            self.close_connection = True
        elif kind == "corrupt":
            self._send(200, _corrupt(body), head=False)
        elif kind == "oversize":
            extra = bytes(opts.get("extra", b"OVERSIZE-GARBAGE\n" * 64))
            self._send(200, body + extra, head=False, length=len(body))
            self.close_connection = True

    def _stall(self, body: bytes, head: bool, seconds: float) -> None:
        """Send headers and a few bytes, then stall (HEAD: stall before the headers)."""
        mirror = self.server.mirror
        if head:
            if mirror._sleep(seconds):
                self._send(200, body, head=True)
            self.close_connection = True
            return
        first = body[: min(16, len(body) // 2)]
        self._send(200, first, head=False, length=len(body))
        if mirror._sleep(seconds):
            self.wfile.write(body[len(first) :])
            self.wfile.flush()
        self.close_connection = True


def _corrupt(body: bytes) -> bytes:
    """Same length, a few bytes flipped in the middle."""
    if not body:
        return body
    buf = bytearray(body)
    mid = len(buf) // 2
    for i in range(mid, min(mid + 4, len(buf))):
        buf[i] ^= 0xFF
    return bytes(buf)


class MirrorServer:
    """HTTP server on 127.0.0.1 serving ``root``, with injectable faults.

    Use as a context manager; ``url`` ends with "/" and ``requests`` lists every
    requested path (no leading slash) in order.
    """

    def __init__(self, root: Path, port: int = 0) -> None:
        """Bind to 127.0.0.1 on ``port`` (0: a free one); serving starts on ``__enter__``."""
        self.root = Path(root).resolve()
        self.requests: list[str] = []
        self.request_log: list[tuple[str, str]] = []  # (method, path)
        self._lock = threading.Lock()
        self._faults: dict[str, list[_Fault]] = {}
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.mirror = self
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> MirrorServer:
        """Start serving in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"MirrorServer:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> MirrorServer:
        """Start and return the server."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Shut the server down."""
        self.stop()

    # -- public API --------------------------------------------------------------

    def url_for(self, rel: str) -> str:
        """Absolute URL of the mirror path ``rel``."""
        return self.url + rel.lstrip("/")

    def reset(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()
            self.request_log.clear()

    def count(self, substr: str) -> int:
        """Number of recorded requests whose path contains ``substr``."""
        with self._lock:
            return sum(substr in r for r in self.requests)

    def fail(self, path: str, kind: str, times: int | None = None, **kw: Any) -> None:
        """Make the next ``times`` requests (None = all) for exactly ``path`` misbehave.

        Kinds: "status" (``code=500``), "truncate", "drop", "stall" (``seconds=5.0``),
        "corrupt", "oversize" (``extra=bytes``), "redirect" (``location=URL``).
        Any request method consumes the fault; several faults on one path queue up.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind == "redirect" and "location" not in kw:
            raise ValueError("redirect fault needs location=")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._faults.setdefault(path.lstrip("/"), []).append(_Fault(kind, times, dict(kw)))

    def clear_faults(self) -> None:
        """Remove every registered fault."""
        with self._lock:
            self._faults.clear()

    # -- used by the handler -----------------------------------------------------

    def _record(self, method: str, rel: str) -> None:
        """Append a request to the logs."""
        with self._lock:
            self.requests.append(rel)
            self.request_log.append((method, rel))

    def _take_fault(self, rel: str) -> _Fault | None:
        """Consume one use of the first fault registered for ``rel``."""
        with self._lock:
            queue = self._faults.get(rel)
            if not queue:
                return None
            fault = queue[0]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.pop(0)
                    if not queue:
                        del self._faults[rel]
            return fault

    def _lookup(self, rel: str) -> bytes | None:
        """Bytes of the regular file ``rel`` under root, or None (missing/outside root)."""
        parts = PurePosixPath(rel).parts
        if not rel or ".." in parts or "\\" in rel or "\x00" in rel:
            return None
        try:
            target = (self.root / rel).resolve()
            if not target.is_relative_to(self.root) or not target.is_file():
                return None
            return target.read_bytes()
        except OSError:
            return None

    def _sleep(self, seconds: float) -> bool:
        """Sleep in small steps; False if the server started shutting down meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping.wait(min(0.05, left)):
                return False
        return True

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        """Remember or forget an open client connection."""
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def main() -> None:
    """`python -m tests.kit.mirrortree DIR [PORT]`: build the stand-in mirror in DIR, serve it."""
    import sys

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "build/mirror")
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    build_mirror(root)
    server = MirrorServer(root, port)
    print(f"stand-in Tiny Core mirror (test data, not a real release) at {server.url}", flush=True)
    with server, contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
