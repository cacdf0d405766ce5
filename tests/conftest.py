"""Shared fixtures: a stand-in Tiny Core mirror served over real HTTP on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .bootkit import DEFAULT_KERNEL_CACHE, KernelKit, build_boot_mirror, debian_kernel
from .mirrortree import MirrorServer, MirrorTree, build_mirror

IN_CI = os.environ.get("CI") == "true"
ROOT = Path(__file__).resolve().parent.parent


def require_tool(tool: str, package: str) -> None:
    """Skip a test whose tool is missing; in CI (CI=true) a missing tool fails instead."""
    if shutil.which(tool) is None:
        message = f"{tool} is not installed (apt-get install {package})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def require_root(why: str) -> None:
    """Skip a test that needs root (e.g. network namespaces); in CI (CI=true) fail instead."""
    if os.geteuid() != 0:
        message = f"needs root: {why}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def mirror_tree(tmp_path_factory: pytest.TempPathFactory) -> MirrorTree:
    require_tool("mksquashfs", "squashfs-tools")
    require_tool("bsdtar", "libarchive-tools")
    return build_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def mirror(mirror_tree: MirrorTree) -> Iterator[MirrorServer]:
    """A fresh server (no faults, no requests counted) over the session's mirror tree."""
    with MirrorServer(mirror_tree.root) as server:
        yield server


@pytest.fixture(scope="session")
def kernel_kit() -> KernelKit:
    """Debian's kernel + loop/squashfs modules, kept in ~/.cache/tcbuild-tests/kernel."""
    require_tool("qemu-system-x86_64", "qemu-system-x86")
    require_tool("apt-get", "apt")
    require_tool("dpkg-deb", "dpkg")
    try:
        return debian_kernel(DEFAULT_KERNEL_CACHE)
    except RuntimeError as exc:
        message = f"cannot get a Debian kernel: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def boot_mirror_tree(tmp_path_factory: pytest.TempPathFactory, kernel_kit: KernelKit) -> MirrorTree:
    """The stand-in mirror with a bootable 15.x/x86_64 tree (see tests/bootkit.py)."""
    require_tool("mksquashfs", "squashfs-tools")
    require_tool("bsdtar", "libarchive-tools")
    return build_boot_mirror(tmp_path_factory.mktemp("boot-mirror"), kernel_kit)


@pytest.fixture
def site(tmp_path: Path, mirror: MirrorServer) -> Path:
    """A copy of the example (recipes, overlays, inventory) served by the loopback mirror."""
    for name in ("recipes", "overlays", "examples"):
        shutil.copytree(ROOT / name, tmp_path / name)
    recipe = tmp_path / "recipes/gameserver.toml"
    recipe.write_text(recipe.read_text().replace(
        'mirrors = ["http://repo.tinycorelinux.net/", "http://distro.ibiblio.org/tinycorelinux/"]',
        f'mirrors = ["{mirror.url}"]'))
    boot = tmp_path / "bootloader"
    boot.mkdir()
    (boot / "pxelinux.0").write_bytes(b"stand-in pxelinux.0\n")
    (boot / "ldlinux.c32").write_bytes(b"stand-in ldlinux.c32\n")
    (tmp_path / "tftp").mkdir()
    (tmp_path / "tftp/README.site").write_text("the operator's own file\n")
    return tmp_path


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: a disk that fills up (mounting needs root)."""
    require_root("mounting a small tmpfs")
    disk = tmp_path / "tiny"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
