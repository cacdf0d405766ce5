"""Tests of the stand-in mirror and fault-injecting server in tests/kit/mirrortree.py."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kit.mirrortree import (
    DEP_FILES,
    EXTENSIONS,
    KERNEL_VERSIONS,
    MirrorServer,
    MirrorTree,
    build_mirror,
    read_newc,
)

D64 = "15.x/x86_64/release/distribution_files"
D32 = "15.x/x86/release/distribution_files"
TCZ64 = "15.x/x86_64/tcz"


@pytest.fixture
def mirror(mirror_tree: MirrorTree) -> MirrorTree:
    """The session's stand-in mirror tree (this module's tests look at the tree itself)."""
    return mirror_tree


@pytest.fixture
def server(mirror: MirrorTree) -> Iterator[MirrorServer]:
    """A fresh server over the shared mirror."""
    with MirrorServer(mirror.root) as srv:
        yield srv


def _run(*args: str | Path) -> str:
    """Run a command and return its stdout."""
    return subprocess.run([str(a) for a in args], capture_output=True, check=True, text=True).stdout


def _conn(server: MirrorServer, timeout: float = 5.0) -> http.client.HTTPConnection:
    """An http.client connection to the server."""
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def _get(server: MirrorServer, rel: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``rel`` over a fresh connection; return status and body."""
    conn = _conn(server, timeout)
    try:
        conn.request("GET", "/" + rel)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- mirror


def test_layout_and_kernel_versions(mirror: MirrorTree) -> None:
    """The expected release files exist and modules carry the announced kernel version."""
    for name in ("vmlinuz64", "rootfs64.gz", "modules64.gz", "corepure64.gz"):
        assert mirror.path(f"{D64}/{name}").is_file()
    for name in ("vmlinuz", "vmlinuz64", "rootfs.gz", "modules.gz", "modules64.gz", "core.gz"):
        assert mirror.path(f"{D32}/{name}").is_file()
    assert mirror.kernel_versions == KERNEL_VERSIONS
    assert mirror.read(f"{D64}/vmlinuz64").startswith(b"STAND-IN KERNEL")
    for key, version in mirror.kernel_versions.items():
        build, name = key.split("/")
        members = read_newc(
            gzip.decompress(mirror.read(f"15.x/{build}/release/distribution_files/{name}"))
        )
        names = {m["name"] for m in members}
        assert f"lib/modules/{version}/kernel/fs/nfs/nfs.ko" in names
        assert f"lib/modules/{version}/modules.dep" in names


def test_rootfs_listing_with_bsdtar(mirror: MirrorTree) -> None:
    """bsdtar sees the device node, sticky tmp, setuid file, symlinks and the hard link."""
    lines = _run("bsdtar", "-tvf", mirror.path(f"{D64}/rootfs64.gz")).splitlines()
    by_name = {line.split()[8]: line for line in lines}
    console = by_name["dev/console"].split()
    assert console[0] == "crw--w--w-" and console[4] == "5,1"
    assert by_name["dev/sda"].split()[0] == "brw-rw----"
    assert by_name["tmp"].startswith("drwxrwxrwt")
    assert by_name["opt"].startswith("drwxrwsr-x")
    assert by_name["bin/su-standin"].startswith("-rwsr-xr-x")
    assert by_name["sbin/init"].endswith("-> ../bin/busybox")
    assert by_name["usr/bin/pair-b"].endswith("link to usr/bin/pair-a")
    assert by_name["home/tc"].split()[2:4] == ["1001", "50"]


def test_corepure64_has_both_gzip_members(mirror: MirrorTree) -> None:
    """Python's gzip reads both members; the combined cpio data has rootfs and modules."""
    core = mirror.read(f"{D64}/corepure64.gz")
    rootfs, modules = mirror.read(f"{D64}/rootfs64.gz"), mirror.read(f"{D64}/modules64.gz")
    assert core == rootfs + modules
    raw = gzip.decompress(core)
    assert raw == gzip.decompress(rootfs) + gzip.decompress(modules)
    members = {m["name"]: m for m in read_newc(raw)}
    console = members["dev/console"]
    assert stat.S_ISCHR(console["mode"])
    assert (console["rdevmajor"], console["rdevminor"]) == (5, 1)
    assert stat.S_IMODE(members["tmp"]["mode"]) == 0o1777
    assert (members["tmp"]["uid"], members["tmp"]["gid"]) == (0, 50)
    assert members["bin/busybox"]["data"] == Path("/bin/busybox").read_bytes()
    assert "lib/modules/6.6.8-tinycore64/kernel/fs/squashfs/squashfs.ko" in members
    a, b = members["usr/bin/pair-a"], members["usr/bin/pair-b"]
    assert a["ino"] == b["ino"] and a["nlink"] == b["nlink"] == 2
    inodes = [m["ino"] for n, m in members.items() if n.startswith(("bin/", "etc/"))]
    assert len(set(inodes)) == len(inodes)


def test_tcz_are_gzip_4k_squashfs_matching_list(mirror: MirrorTree) -> None:
    """Every .tcz is a squashfs (gzip, 4K blocks) whose files match its .list."""
    for build, names in EXTENSIONS.items():
        for name in names:
            tcz = mirror.path(f"15.x/{build}/tcz/{name}.tcz")
            info = _run("unsquashfs", "-s", tcz)
            assert "Compression gzip" in info
            assert "Block size 4096" in info
            listing = _run("unsquashfs", "-lln", "-d", "", tcz).splitlines()
            non_dirs = sorted(line.split()[5].lstrip("/") for line in listing if line[0] != "d")
            expected = tcz.with_name(f"{name}.tcz.list").read_text().splitlines()
            assert non_dirs == expected
            assert listing[0].split()[1] == "1001/50"
    assert mirror.path("15.x/x86/tcz/filesystems-6.6.8-tinycore.tcz").is_file()
    assert not mirror.path(f"{TCZ64}/filesystems-6.6.8-tinycore.tcz").exists()


def test_md5_files_and_index(mirror: MirrorTree) -> None:
    """Every .md5.txt matches its file and md5.db.gz lists every .tcz."""
    md5_files = sorted(mirror.root.rglob("*.md5.txt"))
    # 10 distribution files, 2 release ISOs, the extensions
    assert len(md5_files) == 12 + sum(len(v) for v in EXTENSIONS.values())
    for md5_file in md5_files:
        target = md5_file.with_name(md5_file.name.removesuffix(".md5.txt"))
        digest = hashlib.md5(target.read_bytes()).hexdigest()
        assert md5_file.read_bytes() == f"{digest}  {target.name}\n".encode()
    for build, names in EXTENSIONS.items():
        tdir = mirror.path(f"15.x/{build}/tcz")
        index = gzip.decompress((tdir / "md5.db.gz").read_bytes()).decode().splitlines()
        assert [line.split("  ")[1] for line in index] == sorted(f"{n}.tcz" for n in names)
        for line in index:
            digest, name = line.split("  ")
            assert hashlib.md5((tdir / name).read_bytes()).hexdigest() == digest


def test_dep_files_are_byte_exact(mirror: MirrorTree) -> None:
    """The .dep quirks are kept byte-exact; extensions without deps have no .dep file."""
    for build, names in EXTENSIONS.items():
        for name in names:
            dep = mirror.path(f"15.x/{build}/tcz/{name}.tcz.dep")
            if name in DEP_FILES:
                assert dep.read_bytes() == DEP_FILES[name]
            else:
                assert not dep.exists()
    assert mirror.read(f"{TCZ64}/rpcbind.tcz.dep") == b"libtirpc.tcz\r\n\r\n"
    assert not mirror.path(f"{TCZ64}/ghost.tcz").exists()


def test_build_is_deterministic(mirror: MirrorTree, tmp_path: Path) -> None:
    """A second build produces exactly the same files and bytes."""
    again = build_mirror(tmp_path / "again")

    def snapshot(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    first, second = snapshot(mirror.root), snapshot(again.root)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    assert again.md5s == mirror.md5s


# --------------------------------------------------------------------------- server


def test_serves_bytes_and_404(server: MirrorServer, mirror: MirrorTree) -> None:
    """GET is byte-exact, HEAD has Content-Length only, missing .dep and escapes are 404."""
    rel = f"{TCZ64}/dhcp.tcz"
    with urllib.request.urlopen(server.url + rel, timeout=5) as resp:
        assert resp.read() == mirror.read(rel)
        assert resp.headers["Content-Length"] == str(len(mirror.read(rel)))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + f"{TCZ64}/dhcp.tcz.dep", timeout=5)
    assert err.value.code == 404
    conn = _conn(server)
    conn.request("HEAD", "/" + rel)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    assert resp.headers["Content-Length"] == str(len(mirror.read(rel)))
    for bad in ("/../../../etc/passwd", "/15.x/%2e%2e/%2e%2e/etc/passwd", "/15.x", "/"):
        conn.request("GET", bad)  # same keep-alive connection
        resp = conn.getresponse()
        assert resp.status == 404 and resp.headers["Content-Length"] is not None
        resp.read()
    conn.close()


def test_request_log(server: MirrorServer) -> None:
    """Requests are recorded in order without the leading slash; reset() clears them."""
    _get(server, f"{TCZ64}/dhcp.tcz")
    _get(server, f"{TCZ64}/dhcp.tcz.dep")
    _get(server, f"{TCZ64}/dhcp.tcz")
    assert server.requests == [f"{TCZ64}/dhcp.tcz", f"{TCZ64}/dhcp.tcz.dep", f"{TCZ64}/dhcp.tcz"]
    assert server.count("dhcp.tcz") == 3
    assert server.count(".dep") == 1
    server.reset()
    assert server.requests == [] and server.count("dhcp") == 0


def test_fault_status_times(server: MirrorServer, mirror: MirrorTree) -> None:
    """A status fault applies to the next `times` requests, then the file is served."""
    rel = f"{TCZ64}/libtirpc.tcz"
    server.fail(rel, "status", times=2, code=503)
    assert _get(server, rel)[0] == 503
    assert _get(server, rel)[0] == 503
    assert _get(server, rel) == (200, mirror.read(rel))
    server.fail(rel, "status")  # forever, default 500
    assert [_get(server, rel)[0] for _ in range(3)] == [500, 500, 500]
    server.clear_faults()
    assert _get(server, rel)[0] == 200


def test_fault_truncate(server: MirrorServer, mirror: MirrorTree) -> None:
    """Truncate announces the full length, sends half and closes."""
    rel = f"{D64}/modules64.gz"
    server.fail(rel, "truncate", times=1)
    conn = _conn(server)
    conn.request("GET", "/" + rel)
    resp = conn.getresponse()
    assert resp.headers["Content-Length"] == str(len(mirror.read(rel)))
    with pytest.raises(http.client.IncompleteRead) as err:
        resp.read()
    assert len(err.value.partial) == len(mirror.read(rel)) // 2
    conn.close()
    assert _get(server, rel) == (200, mirror.read(rel))


def test_fault_drop(server: MirrorServer) -> None:
    """Drop closes the connection without any response."""
    rel = f"{TCZ64}/openssl.tcz"
    server.fail(rel, "drop", times=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        _get(server, rel)
    assert _get(server, rel)[0] == 200
    assert server.count("openssl.tcz") == 2


def test_fault_stall_times_out_and_does_not_block_shutdown(mirror: MirrorTree) -> None:
    """A stalled body makes a client with a short timeout fail; shutdown stays quick."""
    rel = f"{D64}/vmlinuz64"
    with MirrorServer(mirror.root) as srv:
        srv.fail(rel, "stall", seconds=30.0)
        conn = _conn(srv, timeout=0.5)
        conn.request("GET", "/" + rel)
        resp = conn.getresponse()  # headers arrive promptly
        assert resp.status == 200
        assert resp.read(8) == mirror.read(rel)[:8]
        with pytest.raises(TimeoutError):
            resp.read()
        conn.close()
        started = time.monotonic()
    assert time.monotonic() - started < 3.0


def test_fault_stall_short_completes(server: MirrorServer, mirror: MirrorTree) -> None:
    """A short stall delays the body but still delivers it intact."""
    rel = f"{TCZ64}/rpcbind.tcz"
    server.fail(rel, "stall", times=1, seconds=0.3)
    started = time.monotonic()
    assert _get(server, rel) == (200, mirror.read(rel))
    assert time.monotonic() - started >= 0.3


def test_fault_corrupt(server: MirrorServer, mirror: MirrorTree) -> None:
    """Corrupt keeps the length but changes the md5."""
    rel = f"{TCZ64}/nfs-utils.tcz"
    server.fail(rel, "corrupt", times=1)
    status, body = _get(server, rel)
    assert status == 200 and len(body) == len(mirror.read(rel))
    assert hashlib.md5(body).hexdigest() != mirror.md5s[rel]


def test_fault_oversize(server: MirrorServer, mirror: MirrorTree) -> None:
    """Oversize announces the real length but sends more bytes than that."""
    rel = f"{TCZ64}/dhcp.tcz.info"
    expected = mirror.read(rel)
    server.fail(rel, "oversize", times=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET /{rel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(expected)}".encode() in head
    assert len(body) > len(expected) and body.startswith(expected)


def test_fault_redirect(server: MirrorServer, mirror: MirrorTree) -> None:
    """Redirect answers 302 with the given Location (urllib follows it)."""
    rel, other = f"{TCZ64}/cyc-a.tcz", f"{TCZ64}/cyc-b.tcz"
    server.fail(rel, "redirect", location=server.url + other)
    status, _ = _get(server, rel)
    assert status == 302
    with urllib.request.urlopen(server.url + rel, timeout=5) as resp:
        assert resp.read() == mirror.read(other)
    assert server.requests == [rel, rel, other]


def test_fail_rejects_unknown_kind(server: MirrorServer) -> None:
    """Unknown fault kinds are refused."""
    with pytest.raises(ValueError):
        server.fail("x", "explode")
