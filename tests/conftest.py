"""Shared fixtures: stand-in Tiny Core mirrors over real HTTP on loopback, the PXE example
node (tests/test_pxe.py, tests/test_bootserver_e2e.py) and the namespace `lab` (root)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcbuild.boot import syslinux
from tcbuild.errors import TcbuildError
from tcbuild.tftproot import releases as pub

from .kit.bootkit import DEFAULT_KERNEL_CACHE, KernelKit, build_boot_mirror, debian_kernel
from .kit.mirrortree import MirrorServer, MirrorTree, build_mirror
from .kit.netns import Lab, host_interfaces, host_state, run
from .kit.requires import IN_CI, require_root, require_tool

ROOT = Path(__file__).resolve().parent.parent


def small_overlay(root: Path) -> None:
    """A small overlay tree: an executable `opt/bootlocal.sh` and a template using a var."""
    bootlocal = root / "opt/bootlocal.sh"
    bootlocal.parent.mkdir(parents=True, exist_ok=True)
    bootlocal.write_text("#!/bin/sh\necho bootlocal\n")
    bootlocal.chmod(0o755)
    conf = root / "usr/local/etc/site.conf.j2"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("server {{ nfs_server }}\n")


def verified(tftp: Path) -> Path:
    """A published tree that `verify` finds sound: every test that publishes checks its result."""
    problems = pub.verify(tftp)
    assert problems == [], problems
    return tftp


SLOW_FIXTURES = {  # a test using one carries its markers (`make test-quick` leaves them out)
    "kernel_kit": ("qemu",),  # Debian's kernel, for images QEMU boots
    "lab": ("netns", "root"),  # network namespaces, veth pairs, daemons in them
    "tiny_disk": ("root",),  # mounts a tmpfs
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the slow tests by what they use; tests that need root or QEMU otherwise say so with
    their own markers."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for marker in SLOW_FIXTURES.get(fixture, ()):
                item.add_marker(marker)


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
    """The stand-in mirror with a bootable 15.x/x86_64 tree (see tests/kit/bootkit.py)."""
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
    for name in syslinux.PXE:
        (boot / name).write_bytes(f"stand-in {name}\n".encode())
    (tmp_path / "tftp").mkdir()
    (tmp_path / "tftp/README.site").write_text("the operator's own file\n")
    return tmp_path


@contextlib.contextmanager
def tmpfs(directory: Path, options: str, why: str) -> Iterator[Path]:
    """A tmpfs mounted on `directory` (made here) with `options`, unmounted again (needs root)."""
    require_root(why)
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: a disk that fills up (mounting needs root)."""
    with tmpfs(tmp_path / "tiny", "size=512k", "mounting a small tmpfs") as disk:
        yield disk


@pytest.fixture(scope="module")
def pxe_mirror(boot_mirror_tree: MirrorTree) -> Iterator[str]:
    """The boot mirror over HTTP on loopback, and the real bootloader files installed."""
    try:
        pub.find_bootloader()
    except TcbuildError as e:
        if IN_CI:
            pytest.fail(str(e))
        pytest.skip(str(e))
    with MirrorServer(boot_mirror_tree.root) as mirror:
        yield mirror.url


@pytest.fixture
def node(tmp_path: Path, pxe_mirror: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example (recipe, overlay, inventory) built from the boot mirror."""
    for name in ("recipes", "overlays", "examples"):
        shutil.copytree(ROOT / name, tmp_path / name)
    recipe = tmp_path / "recipes/gameserver.toml"
    text = recipe.read_text()
    text = re.sub(r"^mirrors = .*$", f'mirrors = ["{pxe_mirror}"]', text, count=1, flags=re.M)
    recipe.write_text(text)
    (tmp_path / "tftp").mkdir()
    shared = tmp_path_factory.getbasetemp() / "pxe-cache"  # downloads once for the module
    (tmp_path / "cache").symlink_to(shared)
    shared.mkdir(exist_ok=True)
    return tmp_path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Namespaces for one test; afterwards none is left, and the host is as it was."""
    require_root("network namespaces, veth pairs and mounts")
    require_tool("ip", "iproute2")
    require_tool("unshare", "util-linux")
    require_tool("nsenter", "util-linux")
    before, interfaces = host_state(), host_interfaces()
    workdir = tmp_path / "lab"
    workdir.mkdir()
    with Lab(workdir) as lab:
        yield lab
        names = lab.namespaces[:]
    assert host_state() == before
    assert not (host_interfaces() - interfaces) & lab.interfaces
    assert not set(names) & set(run("ip", "netns", "list").stdout.split())
