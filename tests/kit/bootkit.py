"""Test support: boot Tiny Core-like images for real under QEMU (standard library only).

``debian_kernel(cache)`` takes a real kernel (and the modules the stand-in init loads: loop and
squashfs, e1000, the NFSv4 client) out of Debian's ``linux-image-*-amd64`` package, fetched with
``apt-get download``.

``build_boot_mirror(root, kit)`` builds the stand-in mirror of :mod:`tests.kit.mirrortree` with a
BOOTABLE ``15.x/x86_64`` tree: the Debian kernel, a static busybox rootfs whose ``/init``
imitates Tiny Core's boot (see ``INIT_SCRIPT``), the real modules, and extensions whose
``tce.installed`` hooks report on the serial line (``dhcp.tcz`` with Debian's real dhclient).

``boot(kernel, initrd, append, log, expect)`` boots a kernel + initramfs with QEMU (TCG, direct
kernel boot, serial console to ``log``) and returns as soon as ``expect`` or a failure shows up.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tcbuild.fleet import boottest
from tcbuild.fleet.boottest import BootResult

from .bootinit import BOOTSYNC_SCRIPT, INIT_SCRIPT
from .debianpayload import PAYLOADS
from .mirrortree import (
    EXTENSIONS,
    KERNEL_VERSIONS,
    MirrorTree,
    _Entry,
    _gzip,
    _make_cpio,
    _make_tcz,
    _rootfs_entries,
    _write,
    _write_tcz_dir,
    build_mirror,
    make_iso,
)

__all__ = [
    "DEFAULT_KERNEL_CACHE",
    "FAILURE_MARKERS",
    "INIT_SCRIPT",
    "REQUIRED_APPLETS",
    "BootResult",
    "KernelKit",
    "boot",
    "build_boot_mirror",
    "debian_kernel",
    "install_script",
    "modinfo",
]

DEFAULT_KERNEL_CACHE = Path.home() / ".cache" / "tcbuild-tests" / "kernel"
"""Where the test fixtures keep the kernel kit between runs."""

KERNEL_METAPACKAGE = "linux-image-amd64"
"""Debian's metapackage that names the current kernel package."""

WANTED_MODULES: tuple[str, ...] = ("loop", "squashfs", "e1000", "nfsv4")
"""Modules the init loads (unless built in): loop and squashfs to loop-mount an extension,
e1000 for QEMU's network cards, the NFSv4 client (nfs, sunrpc, lockd, ... as the modules say)
to mount the game server's share."""

_CONFIG_SYMBOLS = {"loop": "CONFIG_BLK_DEV_LOOP", "squashfs": "CONFIG_SQUASHFS"}

REQUIRED_APPLETS: tuple[str, ...] = (
    *("sh", "mount", "umount", "mkdir", "ls", "cat", "echo", "insmod", "losetup", "ln", "cp"),
    *("sleep", "poweroff", "reboot", "sync", "grep", "sed", "find", "chmod", "chown", "stat"),
    *("md5sum", "mknod", "sort", "uname", "head", "tr", "cut", "wc", "hostname", "ip"),
    *("ifconfig", "modprobe", "awk", "yes", "touch", "dirname", "basename", "ps", "tail"),
    *("test", "["),
)
"""Busybox applets the boot rootfs must link (the init uses most of them)."""

_BZIMAGE_MAGIC_OFFSET = 0x202


# --------------------------------------------------------------------------- kernel kit


@dataclass(frozen=True)
class KernelKit:
    """A Debian kernel and the modules (uncompressed ``.ko``) an init needs for squashfs."""

    vmlinuz: Path
    version: str
    modules: dict[str, bytes]
    """Path under ``lib/modules/<version>/`` -> module bytes, in load order (deps first)."""
    depends: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Path -> paths of the modules it needs (``modules.dep`` order: load from the end)."""
    builtin: tuple[str, ...] = ()
    """Wanted modules found built into the kernel (no ``.ko`` needed)."""

    @property
    def load_order(self) -> tuple[str, ...]:
        """Module paths in the order ``insmod`` must load them."""
        return tuple(self.modules)

    def modules_dep(self) -> bytes:
        """A ``modules.dep`` for these modules, listed in load order."""
        lines = []
        for rel in self.modules:
            deps = self.depends.get(rel, ())
            lines.append(f"{rel}: {' '.join(deps)}" if deps else f"{rel}:")
        return "".join(f"{line}\n" for line in lines).encode()


def debian_kernel(cache: Path, *, refresh: bool = False) -> KernelKit:
    """Return a kit with Debian's current amd64 kernel, cached in ``cache``.

    The first call asks apt which ``linux-image-<version>`` package ``linux-image-amd64``
    depends on, downloads it with ``apt-get download`` and extracts only the kernel and the
    needed modules. Later calls reuse the kit without asking apt; ``refresh=True`` asks apt
    again (and fetches a newer kernel if Debian has one).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    _sweep(cache)
    current = cache / "current"
    if not refresh and current.is_file():
        kit = _load_kit(_kit_dir(cache, current.read_text().strip()))
        if kit is not None:
            return kit
    try:
        package = _kernel_package()
    except RuntimeError:
        if current.is_file() and (kit := _load_kit(_kit_dir(cache, current.read_text().strip()))):
            return kit  # apt cannot answer (no package lists): keep the kit we have
        raise
    version = package.removeprefix("linux-image-")
    kit = _load_kit(_kit_dir(cache, version))
    if kit is None:
        deb = _download(package, cache)
        _extract_kit(deb, version, cache)
        kit = _load_kit(_kit_dir(cache, version))
        if kit is None:
            raise RuntimeError(f"kernel kit in {_kit_dir(cache, version)} is unreadable "
                               "after extraction")
    tmp = cache / f".current-{os.getpid()}"
    tmp.write_text(f"{version}\n")
    tmp.replace(current)
    return kit


def _kit_dir(cache: Path, version: str) -> Path:
    """Where the kit of `version` with today's `WANTED_MODULES` is kept (another set, another
    directory: a kit made for fewer modules is never taken for this one)."""
    return cache / f"{version}+{'-'.join(WANTED_MODULES)}"


def _sweep(cache: Path, age: float = 3600) -> None:
    """Remove work files that killed runs left in ``cache`` (older than ``age`` seconds)."""
    for leftover in cache.glob(".*-*"):
        try:
            if time.time() - leftover.lstat().st_mtime > age:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()
        except OSError:
            pass


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` capturing its output; raise RuntimeError with its stderr on failure."""
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err}")
    return proc


def _apt(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run an apt command; as root, after a failure refresh the package lists once and retry.

    Missing lists (cleaned from an image) or stale ones (naming a kernel version the mirror
    no longer has) are what make ``apt-cache depends`` / ``apt-get download`` fail.
    """
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"{cmd[0]} is missing: the kernel kit needs Debian's apt")
    try:
        return _run(cmd, cwd=cwd)
    except RuntimeError:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"])
        return _run(cmd, cwd=cwd)


def _kernel_package() -> str:
    """The real kernel package behind ``linux-image-amd64`` (``linux-image-6.1.0-NN-amd64``)."""
    out = _apt(["apt-cache", "depends", KERNEL_METAPACKAGE]).stdout.decode()
    match = re.search(r"^\s*Depends:\s*(linux-image-\d[^\s<>]*)\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"apt-cache depends {KERNEL_METAPACKAGE} names no kernel:\n{out}")
    return match[1]


def _apt_options() -> list[str]:
    """As root, let apt write into a directory its ``_apt`` sandbox user cannot reach."""
    return ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


def _download(package: str, cache: Path) -> Path:
    """``cache/<package>_*.deb``, fetched with ``apt-get download`` unless already there."""
    have = sorted(cache.glob(f"{package}_*.deb"))
    if have:
        return have[-1]
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        _apt(["apt-get", *_apt_options(), "download", package], cwd=work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download {package} produced no .deb in {work}")
        target = cache / debs[0].name
        debs[0].replace(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for old in cache.glob("linux-image-*.deb"):  # keep one 70 MB package, not every kernel
        if old != target:
            old.unlink(missing_ok=True)
    return target


def _deb_tar(deb: Path, *tar_args: str) -> bytes:
    """`dpkg-deb --fsys-tarfile DEB | tar -f - TAR_ARGS`, without a shell; tar's output."""
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert dpkg.stdout is not None and dpkg.stderr is not None
    tar = subprocess.run(["tar", "-f", "-", *tar_args], stdin=dpkg.stdout, capture_output=True,
                         check=False)
    dpkg.stdout.close()
    errors = dpkg.stderr.read().decode(errors="replace") + tar.stderr.decode(errors="replace")
    if dpkg.wait() != 0 or tar.returncode != 0:
        raise RuntimeError(f"cannot read {deb} (tar {' '.join(tar_args)}): {errors.strip()}")
    return tar.stdout


def _deb_members(deb: Path) -> list[str]:
    """Names in the package's data archive, without the leading ``./``."""
    return [line.removeprefix("./") for line in _deb_tar(deb, "-t").decode().splitlines()]


def _deb_extract(deb: Path, dest: Path, members: Sequence[str]) -> None:
    """Extract exactly ``members`` (paths without ``./``) of the package into ``dest``."""
    _deb_tar(deb, "-x", "-C", str(dest), *(f"./{m}" for m in members))


def _module_name(path: str) -> str:
    """``kernel/fs/squashfs/squashfs.ko.xz`` -> ``squashfs`` (dashes as underscores)."""
    return PurePosixPath(path).name.split(".ko")[0].replace("-", "_")


def _plain_ko(path: str) -> str:
    """The member path with any compression suffix removed (``x.ko.xz`` -> ``x.ko``)."""
    return path[: path.index(".ko") + 3]


def _decompress_module(path: str, data: bytes) -> bytes:
    """Bytes of an uncompressed module (busybox insmod may not read ``.ko.xz``)."""
    if path.endswith(".ko"):
        return data
    if path.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.endswith(".ko.gz"):
        return gzip.decompress(data)
    raise RuntimeError(f"{path}: no standard-library decompressor for this module")


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section of a kernel module (ELF64 little-endian) as key -> values."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + index * shentsize
        )
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for index in range(shnum):
        name_off, offset, size = section(index)
        start = strtab + name_off
        if data[start : data.index(b"\0", start)] == b".modinfo":
            info: dict[str, list[str]] = {}
            for item in data[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
            return info
    return {}


def _extract_kit(deb: Path, version: str, cache: Path) -> None:
    """Extract the kernel and the wanted modules (with their dependencies) into ``cache/<ver>``."""
    members = _deb_members(deb)
    moddir = f"lib/modules/{version}/"
    vmlinuz, config = f"boot/vmlinuz-{version}", f"boot/config-{version}"
    for needed in (vmlinuz, config):
        if needed not in members:
            raise RuntimeError(f"{deb.name} has no {needed}")
    index = {
        _module_name(m): m
        for m in members
        if m.startswith(moddir) and re.search(r"\.ko(\.xz|\.gz|\.zst)?$", m)
    }
    builtin_list = f"{moddir}modules.builtin"

    work = Path(tempfile.mkdtemp(prefix=f".kit-{version}-", dir=cache))
    try:
        first = [vmlinuz, config] + ([builtin_list] if builtin_list in members else [])
        _deb_extract(deb, work, first)
        config_text = (work / config).read_text(errors="replace")
        builtin_file = work / builtin_list
        lines = builtin_file.read_text().splitlines() if builtin_file.exists() else []
        builtin = {_module_name(line) for line in lines if line.strip()}
        for name, symbol in _CONFIG_SYMBOLS.items():
            if re.search(rf"^{symbol}=y$", config_text, re.MULTILINE):
                builtin.add(name)

        # Extract wave by wave: a module's dependencies are known once it is on disk.
        data: dict[str, bytes] = {}  # module name -> uncompressed bytes
        deps: dict[str, list[str]] = {}
        wave = [n for n in WANTED_MODULES if n not in builtin]
        while wave:
            missing = [n for n in wave if n not in index]
            if missing:
                raise RuntimeError(f"{deb.name} has no module {', '.join(missing)}")
            _deb_extract(deb, work, [index[n] for n in wave])
            for name in wave:
                data[name] = _decompress_module(index[name], (work / index[name]).read_bytes())
                needs = modinfo(data[name]).get("depends", [""])[0]
                deps[name] = [d.replace("-", "_") for d in needs.split(",") if d]
            wave = sorted({d for n in wave for d in deps[n]} - builtin - set(data))

        order: list[str] = []

        def visit(name: str, seen: tuple[str, ...]) -> None:
            if name in order or name in builtin:
                return
            if name in seen:
                raise RuntimeError(f"module dependency cycle: {' -> '.join((*seen, name))}")
            for dep in deps[name]:
                visit(dep, (*seen, name))
            order.append(name)

        for name in WANTED_MODULES:
            visit(name, ())

        kit = work / "kit"
        mod_root = kit / "lib" / "modules" / version
        rel = {n: _plain_ko(index[n]).removeprefix(moddir) for n in order}
        for name in order:
            target = mod_root / rel[name]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[name])
        (work / vmlinuz).replace(kit / f"vmlinuz-{version}")
        (work / config).replace(kit / f"config-{version}")
        manifest = {
            "version": version,
            "package": deb.name,
            "vmlinuz": f"vmlinuz-{version}",
            "load_order": [rel[n] for n in order],
            # modules.dep lists dependencies so that loading from the end works
            "depends": {rel[n]: [rel[d] for d in reversed(deps[n]) if d in rel] for n in order},
            "builtin": sorted(n for n in WANTED_MODULES if n in builtin),
        }
        (kit / "kit.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            kit.rename(_kit_dir(cache, version))
        except OSError:
            if not (_kit_dir(cache, version) / "kit.json").is_file():  # not a concurrent run's
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load_kit(kit_dir: Path) -> KernelKit | None:
    """The kit stored in ``kit_dir``, or None when it is missing or incomplete."""
    try:
        manifest = json.loads((kit_dir / "kit.json").read_text())
        version = str(manifest["version"])
        moddir = kit_dir / "lib" / "modules" / version
        modules = {rel: (moddir / rel).read_bytes() for rel in manifest["load_order"]}
        vmlinuz = kit_dir / manifest["vmlinuz"]
        if not vmlinuz.is_file():
            return None
        depends = {k: tuple(v) for k, v in manifest["depends"].items()}
        builtin = tuple(manifest["builtin"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return KernelKit(vmlinuz, version, modules, depends, builtin)


# --------------------------------------------------------------------------- boot mirror


def install_script(name: str) -> bytes:
    """The ``usr/local/tce.installed/NAME`` hook of a boot-mirror extension."""
    return (
        "#!/bin/sh\n"
        f"# tce.installed hook of the stand-in {name} extension (tcbuild boot tests)\n"
        f": > /tmp/installed-{name}\n"
        f"echo 'tc-ext: {name} installed' > /dev/ttyS0\n"
    ).encode()


def _elf_is_static(data: bytes) -> bool:
    """True for an ELF64 executable without a PT_INTERP (dynamic loader) program header."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def _applet_links(busybox: Path) -> list[_Entry]:
    """Symlinks for every applet of ``busybox`` (``--list-full``) under bin, sbin, usr/*."""
    out = _run([str(busybox), "--list-full"]).stdout.decode().split()
    up = {"bin": "busybox", "sbin": "../bin/busybox"}
    links: list[_Entry] = []
    for path in sorted(set(out)):
        top = str(PurePosixPath(path).parent)
        target = up.get(top) or ("../../bin/busybox" if top in ("usr/bin", "usr/sbin") else "")
        if target:
            links.append(_Entry(path, "link", 0o777, link=target))
    names = {PurePosixPath(e.path).name for e in links}
    missing = [a for a in REQUIRED_APPLETS if a not in names]
    if missing:
        raise RuntimeError(f"{busybox} lacks applets: {', '.join(missing)}")
    return links


def _boot_rootfs_entries(busybox: Path) -> list[_Entry]:
    """The stand-in rootfs plus applet links, ``/init`` and what the init needs."""
    data = busybox.read_bytes()
    if not _elf_is_static(data):
        raise RuntimeError(f"{busybox} is not a static binary (apt-get install busybox-static)")
    entries = _rootfs_entries(data, "x86_64")
    entries += [
        _Entry("init", "file", 0o755, data=INIT_SCRIPT.encode()),
        _Entry("proc", "dir", 0o555),
        _Entry("sys", "dir", 0o555),
        _Entry("mnt", "dir", 0o755),
        _Entry("usr/local/tce.installed", "dir", 0o775, 0, 50),
        _Entry("opt/bootsync.sh", "file", 0o775, 0, 50, data=BOOTSYNC_SCRIPT),
    ]
    have = {e.path for e in entries}
    entries += [e for e in _applet_links(busybox) if e.path not in have]
    return entries


def _boot_modules_entries(kit: KernelKit) -> list[_Entry]:
    """``lib/modules/<version>/`` with the kit's real modules and a ``modules.dep``."""
    base = PurePosixPath("lib/modules") / kit.version
    dirs = {"lib", "lib/modules", str(base)}
    for rel in kit.modules:
        path = base / rel
        dirs.update(str(p) for p in path.parents if str(p) != ".")
    entries = [_Entry(d, "dir", 0o755) for d in sorted(dirs)]
    entries += [_Entry(str(base / rel), "file", 0o644, data=b) for rel, b in kit.modules.items()]
    entries.append(_Entry(str(base / "modules.dep"), "file", 0o644, data=kit.modules_dep()))
    return entries


def build_boot_mirror(
    root: Path, kit: KernelKit, *, busybox: Path = Path("/bin/busybox")
) -> MirrorTree:
    """Build the stand-in mirror under ``root`` with a bootable ``15.x/x86_64`` tree.

    The x86 tree is the plain one of :func:`tests.kit.mirrortree.build_mirror`. In x86_64:
    ``vmlinuz64`` is the kit's kernel, ``rootfs64.gz`` a static-busybox rootfs with
    ``/init`` = :data:`INIT_SCRIPT`, ``modules64.gz`` the kit's modules under
    ``lib/modules/<kit.version>/``, ``corepure64.gz`` both, ``CorePure64-15.0.iso`` the
    kernel and ``corepure64.gz`` in its ``/boot``; the extensions are the usual
    ones (``filesystems-<kit.version>`` instead of the stand-in kernel's), each with a
    ``usr/local/tce.installed/<name>`` hook (:func:`install_script`), and ``dhcp.tcz`` with
    Debian's real dhclient (tests/kit/debianpayload.py).
    """
    root = Path(root)
    plain = build_mirror(root, busybox=busybox)
    d64, tcz64 = plain.distribution_dir("x86_64"), plain.tcz_dir("x86_64")
    md5s = {k: v for k, v in plain.md5s.items() if not k.startswith(f"{tcz64}/")}
    shutil.rmtree(root / tcz64)
    names = tuple(
        sorted(
            f"filesystems-{kit.version}" if n.startswith("filesystems-") else n
            for n in EXTENSIONS["x86_64"]
        )
    )
    with tempfile.TemporaryDirectory(prefix="bootmirror-") as tmp:
        work = Path(tmp)
        rootfs = _gzip(_make_cpio(_boot_rootfs_entries(busybox), work / "rootfs"))
        modules = _gzip(_make_cpio(_boot_modules_entries(kit), work / "modules"))
        built = {
            name: _make_tcz(
                name,
                work / "tcz",
                {
                    f"usr/local/tce.installed/{name}": (0o755, install_script(name)),
                    **(PAYLOADS[name]() if name in PAYLOADS else {}),
                },
            )
            for name in names
        }
    _write(root, f"{d64}/vmlinuz64", kit.vmlinuz.read_bytes(), md5s)
    _write(root, f"{d64}/rootfs64.gz", rootfs, md5s)
    _write(root, f"{d64}/modules64.gz", modules, md5s)
    _write(root, f"{d64}/corepure64.gz", rootfs + modules, md5s)
    iso = make_iso({"vmlinuz64": kit.vmlinuz.read_bytes(), "corepure64.gz": rootfs + modules},
                   "CorePure64")
    _write(root, plain.iso("x86_64"), iso, md5s)
    _write_tcz_dir(root, tcz64, names, built, md5s)
    return MirrorTree(
        root=root,
        kernel_versions={**KERNEL_VERSIONS, "x86_64/modules64.gz": kit.version},
        extensions={**EXTENSIONS, "x86_64": names},
        md5s=md5s,
    )


# --------------------------------------------------------------------------- QEMU

FAILURE_MARKERS: tuple[str, ...] = (*boottest.FAILURES, "tc-init: FAILED")
"""Console strings that end a boot as failed: tcbuild's own, and the stand-in init's."""


def boot(
    kernel: Path,
    initrd: Path,
    append: str,
    log: Path,
    expect: str,
    timeout: float = 60,
    *,
    memory_mb: int = 256,
    qemu_args: Sequence[str] = (),
) -> BootResult:
    """Boot ``kernel`` + ``initrd`` directly under QEMU (TCG), serial console to ``log``.

    tcbuild's runner watches the log: ``expect`` passes, a failure marker or QEMU's exit
    fails at once, and QEMU is always stopped. ``qemu_args`` are appended (e.g. a NIC).
    """
    log = Path(log).absolute()
    if "," in str(log):
        raise ValueError(f"QEMU cannot take a serial log path with a comma: {log}")
    cmdline = f"console=ttyS0,115200 panic=-1 {append}".strip()
    cmd = [
        *("qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-display", "none"),
        *("-no-reboot", "-nodefaults", "-serial", f"file:{log}", "-monitor", "none"),
        *("-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline),
        *qemu_args,
    ]
    return boottest.watch(cmd, log, expect, timeout, FAILURE_MARKERS, console_to_log=False)
