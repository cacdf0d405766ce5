"""Tests of tests/kit/bootkit.py: the Debian kernel kit, the boot mirror and two real QEMU boots."""

from __future__ import annotations

import gzip
import hashlib
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from .kit.bootkit import (
    DEFAULT_KERNEL_CACHE,
    INIT_SCRIPT,
    REQUIRED_APPLETS,
    BootResult,
    KernelKit,
    boot,
    debian_kernel,
    install_script,
    modinfo,
)
from .kit.mirrortree import MirrorTree, _Entry, _gzip, _make_cpio, read_newc

D64 = "15.x/x86_64/release/distribution_files"
TCZ64 = "15.x/x86_64/tcz"
MARKER = "BOOTLOCAL-MARKER-OK"

BOOTLOCAL = f"""#!/bin/sh
# bootlocal of the boot test: shows that the extensions' files and hooks are in place
echo "bootlocal: $(dhcp-standin) / $(nfs-utils-standin)" > /dev/ttyS0
for n in dhcp nfs-utils rpcbind libtirpc; do
    [ -f /tmp/installed-$n ] && echo "bootlocal: installed-$n present" > /dev/ttyS0
done
echo {MARKER} > /dev/ttyS0
""".encode()


def _members(data: bytes) -> dict[str, dict[str, Any]]:
    """The newc members of gzip'd (possibly multi-member) ``data`` by name."""
    return {m["name"]: m for m in read_newc(gzip.decompress(data))}


def _segment(files: dict[str, tuple[int, bytes]], work: Path) -> bytes:
    """A gzip'd newc initramfs segment (bsdtar from an mtree spec) adding ``files``.

    Directories are created as needed; ``tmp`` and ``opt`` keep the base's modes (the kernel
    applies a directory entry's mode even when the directory exists).
    """
    base = {"tmp": (0o1777, 50), "opt": (0o2775, 50)}
    entries = [_Entry(".", "dir", 0o755)]
    dirs: set[str] = set()
    for path in files:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    for d in sorted(dirs):
        mode, gid = base.get(d, (0o755, 0))
        entries.append(_Entry(d, "dir", mode, 0, gid))
    for path, (mode, data) in sorted(files.items()):
        entries.append(_Entry(path, "file", mode, 0, 50 if path.startswith("opt/") else 0, data))
    return _gzip(_make_cpio(entries, work))


def _initrd(tree: MirrorTree, files: dict[str, tuple[int, bytes]], tmp_path: Path) -> Path:
    """The boot mirror's corepure64.gz followed by a segment adding ``files``."""
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(tree.read(f"{D64}/corepure64.gz") + _segment(files, tmp_path / "segment"))
    return initrd


def _optional(tree: MirrorTree, names: list[str]) -> dict[str, tuple[int, bytes]]:
    """``tmp/builtin/optional`` files for the extensions ``names`` (with their .dep files)."""
    files: dict[str, tuple[int, bytes]] = {}
    for name in names:
        files[f"tmp/builtin/optional/{name}.tcz"] = (0o644, tree.read(f"{TCZ64}/{name}.tcz"))
        dep = tree.path(f"{TCZ64}/{name}.tcz.dep")
        if dep.exists():
            files[f"tmp/builtin/optional/{name}.tcz.dep"] = (0o644, dep.read_bytes())
    return files


def _boot_ok(tree: MirrorTree, initrd: Path, log: Path, expect: str) -> BootResult:
    """Boot the boot mirror's kernel with ``initrd``; fail the test with the log tail if not ok."""
    result = boot(tree.path(f"{D64}/vmlinuz64"), initrd, "", log, expect, timeout=60)
    if not result.ok:
        pytest.fail(f"boot failed after {result.seconds:.1f} s: {result.reason}\n{result.tail}")
    return result


# --------------------------------------------------------------------------- kit (no boot)


def test_kernel_kit_facts(kernel_kit: KernelKit) -> None:
    """A bzImage, its version, and loop/squashfs/NFS modules built for exactly that kernel."""
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+-amd64", kernel_kit.version)
    assert kernel_kit.vmlinuz.name == f"vmlinuz-{kernel_kit.version}"
    assert kernel_kit.vmlinuz.read_bytes()[0x202:0x206] == b"HdrS"
    names = {Path(rel).name for rel in kernel_kit.load_order}
    for wanted in ("loop", "squashfs", "nfsv4", "nfs", "sunrpc"):
        assert f"{wanted}.ko" in names or wanted in kernel_kit.builtin
    for rel, data in kernel_kit.modules.items():
        assert rel.startswith("kernel/") and rel.endswith(".ko")
        info = modinfo(data)
        assert info["vermagic"][0].split()[0] == kernel_kit.version
        assert info["name"] == [Path(rel).stem.replace("-", "_")]
        for dep in kernel_kit.depends[rel]:  # dependencies load earlier
            assert kernel_kit.load_order.index(dep) < kernel_kit.load_order.index(rel)
    dep_lines = kernel_kit.modules_dep().decode().splitlines()
    assert [line.split(":")[0] for line in dep_lines] == list(kernel_kit.load_order)


def test_kernel_kit_is_cached(kernel_kit: KernelKit) -> None:
    """A second call neither asks apt nor extracts anything: same files, at once."""
    started = time.monotonic()
    again = debian_kernel(DEFAULT_KERNEL_CACHE)
    assert time.monotonic() - started < 1.0
    assert again == kernel_kit
    assert again.vmlinuz == kernel_kit.vmlinuz and again.vmlinuz.is_file()
    assert (DEFAULT_KERNEL_CACHE / "current").read_text().strip() == kernel_kit.version


# --------------------------------------------------------------------------- boot mirror


def test_boot_mirror_md5s_and_release_files(
    boot_mirror_tree: MirrorTree, kernel_kit: KernelKit, mirror_tree: MirrorTree
) -> None:
    """Every .md5.txt is right; x86_64 has the Debian kernel and its modules; x86 is plain."""
    tree = boot_mirror_tree
    md5_files = sorted(tree.root.rglob("*.md5.txt"))
    # 10 distribution files, 2 release ISOs, the extensions
    assert len(md5_files) == 12 + sum(len(v) for v in tree.extensions.values())
    for md5_file in md5_files:
        target = md5_file.with_name(md5_file.name.removesuffix(".md5.txt"))
        digest = hashlib.md5(target.read_bytes()).hexdigest()
        assert md5_file.read_bytes() == f"{digest}  {target.name}\n".encode()
        assert tree.md5s[str(target.relative_to(tree.root))] == digest
    assert len(tree.md5s) == len(md5_files)

    assert tree.read(f"{D64}/vmlinuz64") == kernel_kit.vmlinuz.read_bytes()
    rootfs, modules = tree.read(f"{D64}/rootfs64.gz"), tree.read(f"{D64}/modules64.gz")
    assert tree.read(f"{D64}/corepure64.gz") == rootfs + modules
    assert tree.kernel_versions["x86_64/modules64.gz"] == kernel_kit.version

    mods = _members(modules)
    base = f"lib/modules/{kernel_kit.version}"
    assert mods[f"{base}/modules.dep"]["data"] == kernel_kit.modules_dep()
    for rel, data in kernel_kit.modules.items():
        assert mods[f"{base}/{rel}"]["data"] == data
    core = _members(tree.read(f"{D64}/corepure64.gz"))
    versions = {n.split("/")[2] for n in core if n.startswith("lib/modules/") and n.count("/") > 1}
    assert versions == {kernel_kit.version}

    for rel in mirror_tree.md5s:  # the x86 tree is the plain mirror's, byte for byte
        if rel.startswith("15.x/x86/"):
            assert tree.read(rel) == mirror_tree.read(rel)


def test_boot_mirror_rootfs(boot_mirror_tree: MirrorTree) -> None:
    """The rootfs has /init, applet links, device nodes and Tiny Core's modes and users."""
    members = _members(boot_mirror_tree.read(f"{D64}/rootfs64.gz"))
    init = members["init"]
    assert init["mode"] == stat.S_IFREG | 0o755 and init["data"] == INIT_SCRIPT.encode()
    links = {n.rsplit("/", 1)[-1] for n, m in members.items() if stat.S_ISLNK(m["mode"])}
    assert set(REQUIRED_APPLETS) <= links
    for name, (major, minor) in {"console": (5, 1), "ttyS0": (4, 64), "null": (1, 3)}.items():
        node = members[f"dev/{name}"]
        assert stat.S_ISCHR(node["mode"])
        assert (node["rdevmajor"], node["rdevminor"]) == (major, minor)
    for path, mode in {"tmp": 0o1777, "opt": 0o2775}.items():
        assert stat.S_IMODE(members[path]["mode"]) == mode
        assert (members[path]["uid"], members[path]["gid"]) == (0, 50)
    assert b"tc:x:1001:50:" in members["etc/passwd"]["data"]
    assert b"staff:x:50:" in members["etc/group"]["data"]
    assert members["opt/bootsync.sh"]["data"].endswith(b"/opt/bootlocal.sh &\n")
    assert not any(n.startswith("lib/modules") for n in members)


def test_boot_mirror_extensions(boot_mirror_tree: MirrorTree, kernel_kit: KernelKit) -> None:
    """filesystems-KERNEL resolves to the Debian version; each extension has an install hook."""
    tree = boot_mirror_tree
    names = tree.extensions["x86_64"]
    assert f"filesystems-{kernel_kit.version}" in names
    assert not any("tinycore" in n for n in names)
    assert b"filesystems-KERNEL.tcz" in tree.read(f"{TCZ64}/nfs-utils.tcz.dep")
    index = gzip.decompress(tree.read(f"{TCZ64}/md5.db.gz")).decode().splitlines()
    assert [line.split("  ")[1] for line in index] == sorted(f"{n}.tcz" for n in names)
    for name in names:
        listing = tree.read(f"{TCZ64}/{name}.tcz.list").decode().splitlines()
        assert f"usr/local/tce.installed/{name}" in listing
    assert b"tc-ext: dhcp installed" in install_script("dhcp")


# --------------------------------------------------------------------------- real boots


def test_boot_loads_onboot_extensions_and_runs_bootlocal(
    boot_mirror_tree: MirrorTree, kernel_kit: KernelKit, tmp_path: Path
) -> None:
    """Modules load, onboot.lst extensions (and .dep chains) are loop-mounted, hooks and
    bootlocal.sh run: the whole path the built images rely on."""
    tree = boot_mirror_tree
    files = _optional(
        tree, ["dhcp", "nfs-utils", "rpcbind", "libtirpc", f"filesystems-{kernel_kit.version}"]
    )
    files["tmp/builtin/onboot.lst"] = (0o644, b"dhcp.tcz\nnfs-utils.tcz\n")
    files["opt/bootlocal.sh"] = (0o775, BOOTLOCAL)
    result = _boot_ok(tree, _initrd(tree, files, tmp_path), tmp_path / "serial.log", MARKER)
    log = result.log.read_text(errors="replace")
    lines = [line.strip() for line in log.splitlines()]

    for rel in kernel_kit.load_order:
        assert f"tc-init: loaded module {rel}" in lines
    assert "tc-init: mode /tmp 1777 0:50" in lines and "tc-init: mode /opt 2775 0:50" in lines
    fs = f"filesystems-{kernel_kit.version}"
    mounted = [line.split()[2] for line in lines if line.startswith("tc-init: mounted ")]
    assert mounted == ["dhcp.tcz", "libtirpc.tcz", "rpcbind.tcz", f"{fs}.tcz", "nfs-utils.tcz"]
    assert "tc-init: mounted dhcp.tcz at /tmp/tcloop/dhcp" in lines
    hooks = [line.split()[1] for line in lines if line.startswith("tc-ext: ")]
    assert hooks == ["dhcp", "libtirpc", "rpcbind", fs, "nfs-utils"]
    assert lines.index("tc-ext: nfs-utils installed") < lines.index(
        "tc-init: running /opt/bootsync.sh"
    )
    assert "bootlocal: dhcp stand-in / nfs-utils stand-in" in lines
    for name in ("dhcp", "nfs-utils", "rpcbind", "libtirpc"):
        assert f"bootlocal: installed-{name} present" in lines
    assert lines.index(MARKER) > lines.index("tc-init: running /opt/bootsync.sh")
    assert result.seconds < 45


def test_boot_failure_is_reported_fast(boot_mirror_tree: MirrorTree, tmp_path: Path) -> None:
    """An onboot.lst naming a missing extension makes the init say FAILED; boot() stops at once."""
    tree = boot_mirror_tree
    files = _optional(tree, ["dhcp"])
    files["tmp/builtin/onboot.lst"] = (0o644, b"dhcp.tcz\nghost.tcz\n")
    files["opt/bootlocal.sh"] = (0o775, BOOTLOCAL)
    initrd = _initrd(tree, files, tmp_path)
    log = tmp_path / "serial.log"
    result = boot(tree.path(f"{D64}/vmlinuz64"), initrd, "", log, MARKER, timeout=60)
    assert result.ok is False
    assert result.seconds < 25
    assert (
        result.reason
        == "tc-init: FAILED to mount /tmp/builtin/optional/ghost.tcz: no such file"
    )
    assert "tc-init: mounted dhcp.tcz at /tmp/tcloop/dhcp" in result.tail
    assert MARKER not in log.read_text(errors="replace")
