"""Shared fixtures: a stand-in Tiny Core mirror served over real HTTP on loopback."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from .bootkit import DEFAULT_KERNEL_CACHE, KernelKit, build_boot_mirror, debian_kernel
from .mirrortree import MirrorServer, MirrorTree, build_mirror

IN_CI = os.environ.get("CI") == "true"


def require_tool(tool: str, package: str) -> None:
    """Skip a test whose tool is missing; in CI (CI=true) a missing tool fails instead."""
    if shutil.which(tool) is None:
        message = f"{tool} is not installed (apt-get install {package})"
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
