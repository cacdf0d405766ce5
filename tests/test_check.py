"""Will it run? `tcbuild check` and the build's check, on Debian's own binaries packed into
extensions of a copy of the stand-in mirror (with the `provides.db` that names them)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcbuild import load_recipe
from tcbuild.check.loader import Program, View, find_library, library_dirs, node_of, read_program
from tcbuild.check.rules import Finding, check_image, kernel_version, parse_provides
from tcbuild.check.run import CheckFailed, check_target
from tcbuild.formats.newc import Entry
from tcbuild.formats.tcz import pack_directory
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions, BuildResult, build

from .kit.bootkit import KernelKit
from .kit.mirrortree import MirrorServer, MirrorTree, write_provides
from .kit.requires import require_tool

ROOT = Path(__file__).resolve().parent.parent
TCZ = "15.x/x86_64/tcz"
LIB = Path("/lib/x86_64-linux-gnu")
LOADER = "/lib64/ld-linux-x86-64.so.2"
# Extensions of Debian's binaries: name -> {path in the image: host file, or a symlink "->x"}.
DEBIAN = {
    "xz": {"usr/local/bin/xz": "/usr/bin/xz"},
    "liblzma": {"usr/local/lib/liblzma.so.5": str(LIB / "liblzma.so.5")},
    "glibc": {"lib/libc.so.6": str(LIB / "libc.so.6"), LOADER[1:]: LOADER},
    "bash": {"usr/local/bin/bash": "/bin/bash", "bin/bash": "->../usr/local/bin/bash",
             "usr/local/lib/libtinfo.so.6": str(LIB / "libtinfo.so.6")},
}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if source.startswith("->"):
            path.symlink_to(source[2:])
        else:
            shutil.copyfile(Path(source).resolve(), path)
            path.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def debian_tree(mirror_tree: MirrorTree, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in mirror plus xz, liblzma, glibc and bash made of Debian's files."""
    require_tool("mksquashfs", "squashfs-tools")
    root = tmp_path_factory.mktemp("debian-mirror")
    shutil.copytree(mirror_tree.root, root, dirs_exist_ok=True)
    tcz_dir = root / TCZ
    for name, files in DEBIAN.items():
        target = tcz_dir / f"{name}.tcz"
        pack_directory(_tree(tmp_path_factory.mktemp(name), files), target)
        digest = hashlib.md5(target.read_bytes()).hexdigest()
        (tcz_dir / f"{name}.tcz.md5.txt").write_text(f"{digest}  {name}.tcz\n")
        (tcz_dir / f"{name}.tcz.list").write_text("".join(f"{p}\n" for p in files))
    (tcz_dir / "liblzma.tcz.dep").write_text("glibc.tcz\n")
    write_provides(tcz_dir)
    return root


@pytest.fixture
def debian_mirror(debian_tree: Path) -> Iterator[MirrorServer]:
    with MirrorServer(debian_tree) as server:
        yield server


def recipe(tmp_path: Path, mirror: str, install: list[str], image: str = "",
           mode: str = "unpacked", local: str = "") -> Path:
    path = tmp_path / "r.toml"
    names = ", ".join(f'"{n}"' for n in install)
    path.write_text(f'[tinycore]\nrelease = "15.x"\nflavor = "corepure64"\nmirrors = ["{mirror}"]\n'
                    f'[extensions]\ninstall = [{names}]\nmode = "{mode}"\n{local}\n'
                    f'[image]\n{image}\n')
    return path


def run(tmp_path: Path, recipe_path: Path, out: str = "out", cache: str = "",
        force: bool = False) -> BuildResult:
    options = BuildOptions(out_dir=tmp_path / out, force=force, fetch=FetchOptions(
        cache_dir=tmp_path / f"cache-{cache or out}"))
    return build(load_recipe(recipe_path), options)


def lines(result: BuildResult) -> list[str]:
    return [f.line() for f in result.findings]


def test_a_program_without_its_libraries_then_with_them(
        tmp_path: Path, debian_mirror: MirrorServer) -> None:
    without = run(tmp_path, recipe(tmp_path, debian_mirror.url, ["xz"]), "without")
    assert lines(without) == [
        f"/usr/local/bin/xz [extension:xz.tcz]: its loader {LOADER} (PT_INTERP) is not in "
        "the image (add `glibc` to extensions.install)",
        "/usr/local/bin/xz [extension:xz.tcz]: needs liblzma.so.5, which the loader does not "
        "find in the image (add `liblzma` to extensions.install)",
        "/usr/local/bin/xz [extension:xz.tcz]: needs libc.so.6, which the loader does not "
        "find in the image (add `glibc` to extensions.install)",
    ]
    assert without.initrd.is_file()  # warn: the build succeeds
    kept = json.loads((without.out_dir / "build.json").read_text())["check"]
    assert [f["message"] for f in kept["findings"]] == lines(without)
    again = run(tmp_path, recipe(tmp_path, debian_mirror.url, ["xz"]), "without")
    assert again.up_to_date and again.findings == without.findings

    with_libs = run(tmp_path, recipe(tmp_path, debian_mirror.url, ["xz", "liblzma", "glibc"]),
                    "with")
    assert with_libs.findings == ()


def test_provides_db_is_read_only_to_check_an_image(
        tmp_path: Path, debian_mirror: MirrorServer, caplog: pytest.LogCaptureFixture) -> None:
    path = recipe(tmp_path, debian_mirror.url, ["xz"])
    assert "(add `glibc` to extensions.install)" in lines(run(tmp_path, path))[0]
    ref = json.loads((tmp_path / f"cache-out/refs/{TCZ}/provides.db.gz.json").read_text())
    cached = tmp_path / "cache-out/objects" / ref["sha256"][:2] / ref["sha256"]
    cached.chmod(0o644)
    cached.write_bytes(bytes(ref["size"]))  # damaged in the cache: the same size, not a gzip
    caplog.set_level("WARNING", "tcbuild")
    assert run(tmp_path, path).up_to_date  # an unchanged build does not look
    assert not [r for r in caplog.records if "provides.db.gz" in r.getMessage()]
    forced = run(tmp_path, path, force=True)  # a check does, and does without its hints
    assert [r.getMessage() for r in caplog.records if "provides.db.gz" in r.getMessage()] == [
        f"{TCZ}/provides.db.gz: not a gzip file (Not a gzipped file (b'\\x00\\x00')) "
        "(the check names no extensions)"]
    assert "add `glibc`" not in lines(forced)[0] and forced.initrd.is_file()


def test_append_mode_and_the_kept_programs_find_the_same(
        tmp_path: Path, debian_mirror: MirrorServer) -> None:
    repacked = run(tmp_path, recipe(tmp_path, debian_mirror.url, ["xz", "glibc"]), "repack")
    appended = recipe(tmp_path, debian_mirror.url, ["xz", "glibc"], 'output = "append"')
    first = run(tmp_path, appended, "append", cache="repack")  # composed from indexes
    kept = list((tmp_path / "cache-repack").rglob("derived/*"))
    again = run(tmp_path, appended, "append", cache="repack", force=True)
    assert repacked.findings == first.findings == again.findings
    assert [f.missing for f in again.findings] == ["liblzma.so.5"]
    assert kept and sorted(kept) == sorted((tmp_path / "cache-repack").rglob("derived/*"))


def test_error_policy_fails_the_build_with_nothing_written(
        tmp_path: Path, debian_mirror: MirrorServer) -> None:
    path = recipe(tmp_path, debian_mirror.url, ["xz", "glibc"], 'check = "error"')
    with pytest.raises(CheckFailed) as failed:
        run(tmp_path, path)
    assert str(failed.value).splitlines() == [
        "/usr/local/bin/xz [extension:xz.tcz]: needs liblzma.so.5, which the loader does not "
        "find in the image (add `liblzma` to extensions.install)"]
    assert not (tmp_path / "out").exists()
    ignored = recipe(tmp_path, debian_mirror.url, ["xz", "glibc"],
                     'check = "error"\ncheck_ignore = ["/usr/local/bin/*"]')
    assert run(tmp_path, ignored).findings == ()
    off = recipe(tmp_path, debian_mirror.url, ["xz"], 'check = "off"')
    assert run(tmp_path, off, "off").findings == ()


def test_a_bash_script_without_and_with_a_bash_extension(
        tmp_path: Path, debian_mirror: MirrorServer) -> None:
    hook = tmp_path / "hook/usr/local/bin/hook"
    hook.parent.mkdir(parents=True)
    hook.write_text('#!/bin/bash\necho "${BASH_VERSION}"\n')
    hook.chmod(0o755)
    local = 'local = ["hook"]'
    without = run(tmp_path, recipe(tmp_path, debian_mirror.url, ["glibc"], local=local), "a")
    assert lines(without) == [
        "/usr/local/bin/hook [extension:hook.tcz]: its interpreter /bin/bash (#!) is not in the "
        "image (add `bash` to extensions.install)"]
    with_bash = run(tmp_path, recipe(tmp_path, debian_mirror.url, ["glibc", "bash"],
                                     local=local), "b")
    assert with_bash.findings == ()


def test_onboot_checks_each_tcz_in_its_own_dependency_closure(
        tmp_path: Path, debian_mirror: MirrorServer, debian_tree: Path) -> None:
    path = recipe(tmp_path, debian_mirror.url, ["xz", "liblzma", "glibc"], mode="onboot")
    loose = run(tmp_path, path, "loose")
    assert lines(loose) == [
        f"/usr/local/bin/xz [extension:xz.tcz]: its loader {LOADER} (PT_INTERP) is not in the "
        "image (glibc.tcz has it, but xz.tcz does not depend on it: add it to xz.tcz.dep)",
        "/usr/local/bin/xz [extension:xz.tcz]: needs liblzma.so.5, which the loader does not "
        "find in the image (liblzma.tcz has it, but xz.tcz does not depend on it: add it to "
        "xz.tcz.dep)",
        "/usr/local/bin/xz [extension:xz.tcz]: needs libc.so.6, which the loader does not find "
        "in the image (glibc.tcz has it, but xz.tcz does not depend on it: add it to "
        "xz.tcz.dep)",
    ]
    assert [f.line() for f in check_target(loose.out_dir)] == lines(loose)  # tcbuild check
    alone = tmp_path / "initrd.gz"  # without build.json: an onboot file's .tcz names it
    shutil.copyfile(loose.initrd, alone)
    assert [f.line() for f in check_target(alone)] == lines(loose)
    dep = debian_tree / TCZ / "xz.tcz.dep"
    dep.write_text("glibc.tcz\n")
    try:
        missing = run(tmp_path, recipe(tmp_path, debian_mirror.url, ["xz", "glibc"],
                                       mode="onboot"), "missing")
        assert [f.missing for f in missing.findings] == ["liblzma.so.5"]
        dep.write_text("liblzma.tcz\n")  # and glibc through liblzma's
        assert run(tmp_path, path, "closed").findings == ()
    finally:
        dep.unlink()


def test_a_kernel_and_a_core_of_different_versions(
        tmp_path: Path, mirror: MirrorServer, kernel_kit: KernelKit) -> None:
    path = recipe(tmp_path, mirror.url, ["nfs-utils"])
    built = run(tmp_path, path)
    assert built.findings == ()  # the stand-in kernel is no bzImage: the core's modules rule
    initrd = built.initrd
    command = [sys.executable, "-m", "tcbuild", "check", str(initrd), "--kernel",
               str(kernel_kit.vmlinuz), "--recipe", str(path), "--cache", str(tmp_path / "c")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    version = kernel_kit.version
    assert proc.stdout.splitlines() == [
        f"/lib/modules/6.6.8-tinycore64 [base]: modules for kernel 6.6.8-tinycore64, but "
        f"{kernel_kit.vmlinuz.name} is {version}",
        "/usr/local/lib/modules/6.6.8-tinycore64 [extension:filesystems-6.6.8-tinycore64.tcz]: "
        f"modules for kernel 6.6.8-tinycore64, but {kernel_kit.vmlinuz.name} is {version}",
        "/usr/local/tce.installed/filesystems-6.6.8-tinycore64 "
        "[extension:filesystems-6.6.8-tinycore64.tcz]: filesystems-6.6.8-tinycore64.tcz is for "
        f"kernel 6.6.8-tinycore64, but {kernel_kit.vmlinuz.name} is {version} (use "
        "filesystems-KERNEL in the recipe)",
    ]
    assert kernel_version(kernel_kit.vmlinuz.read_bytes()) == version
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, cwd=ROOT)
    found = json.loads(as_json.stdout)["findings"]
    assert [f["path"] for f in found] == ["lib/modules/6.6.8-tinycore64",
                                          "usr/local/lib/modules/6.6.8-tinycore64",
                                          "usr/local/tce.installed/filesystems-6.6.8-tinycore64"]


def test_the_example_recipe_checks_clean(tmp_path: Path, mirror: MirrorServer) -> None:
    command = [sys.executable, "-m", "tcbuild", "build", "recipes/gameserver.toml", "--mirror",
               mirror.url, "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c"),
               "--fast", "--json"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["findings"] == []
    check = subprocess.run([sys.executable, "-m", "tcbuild", "check", str(tmp_path / "out"),
                            "--cache", str(tmp_path / "c"), "--mirror", mirror.url],
                           capture_output=True, text=True, cwd=ROOT)
    assert (check.returncode, check.stdout) == (0, ""), check.stderr


# -- the analysis on its own ---------------------------------------------------------------------

def entry(path: str, data: bytes = b"", mode: int = 0o755, target: str | None = None) -> Entry:
    kind = stat.S_IFLNK if target is not None else stat.S_IFREG
    body = target.encode() if target is not None else data
    return Entry(path, kind | mode, 0, 0, 1, 0, len(body), 0, (0, 0), body)


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0, (0, 0), None)


def test_the_loader_search_path_origin_conf_includes_and_symlinks() -> None:
    xz = read_program(Path("/usr/bin/xz").read_bytes())
    assert xz is not None and xz.interpreter == LOADER
    assert xz.needed == ("liblzma.so.5", "libc.so.6") and xz.abi == (64, "EM_X86_64")
    lzma = (LIB / "liblzma.so.5").resolve().read_bytes()
    dirs = ["etc", "etc/ld.so.conf.d", "opt", "opt/app", "opt/app/bin", "opt/app/lib", "usr",
            "usr/lib", "srv", "srv/lib", "lib"]
    nodes = {e.path: node_of(e, "base") for e in [
        *map(directory, dirs),
        entry("etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n/usr/lib # comment\n"),
        entry("etc/ld.so.conf.d/srv.conf", b"/srv/lib\n"),
        entry("opt/app/lib/liblzma.so.5.4.1", lzma),
        entry("opt/app/lib/liblzma.so.5", target="liblzma.so.5.4.1"),
        entry("srv/lib/libc.so.6", target="/lib/libc.so.6"),
        entry("lib/libc.so.6", b"\x7fELF not really"),
    ]}
    view = View(nodes)
    conf = library_dirs(view)
    assert conf == ("srv/lib", "usr/lib")
    here = "opt/app/bin/xz"
    assert find_library(view, "liblzma.so.5", xz, here, conf) is None
    origin = Program(xz.interpreter, xz.needed, runpath=("$ORIGIN/../lib",), abi=xz.abi)
    assert find_library(view, "liblzma.so.5", origin, here, conf) == "opt/app/lib/liblzma.so.5.4.1"
    assert find_library(view, "libc.so.6", xz, here, conf) == "lib/libc.so.6"
    other = Program(xz.interpreter, abi=(32, "EM_386"))
    assert find_library(view, "liblzma.so.5", Program(None, runpath=("/opt/app/lib",),
                                                       abi=other.abi), here, ()) is None


def test_findings_name_the_providers_and_honour_ignores() -> None:
    provides = parse_provides(b"bash.tcz\nusr/local/bin/bash\n\nzlib.tcz\n/usr/local/lib/"
                              b"libz.so.1\nusr/local/share/doc/bash\n")
    assert provides["*bin/bash"] == ("bash",) and provides["*/libz.so.1"] == ("zlib",)
    entries = [(directory("bin"), "base"), (entry("bin/run", b"#!/bin/bash -e\n"), "overlay:x"),
               (entry("bin/env", b"#!/usr/bin/env bash\n"), "overlay:y"),
               (entry("bin/doc", b"#!/bin/sh\n", mode=0o644), "base")]
    found = check_image(entries, provides=provides)
    assert found == [
        Finding("bin/run", "overlay:x", "its interpreter /bin/bash (#!) is not in the image",
                "/bin/bash", ("bash",)),
        Finding("bin/env", "overlay:y", "its interpreter /usr/bin/env (#!) is not in the image",
                "/usr/bin/env"),
    ]
    assert check_image(entries, ignore=["/bin/r*", "bin/env"]) == []
    assert kernel_version(b"\0" * 0x202 + b"HdrS" + b"\0" * 8 + (0x10).to_bytes(2, "little")
                          + b"6.6.8-tinycore64 (tc@box) #1\0") == "6.6.8-tinycore64"
    assert kernel_version(b"STAND-IN KERNEL") is None


def _with_field(data: bytes, offset: int, value: int) -> bytes:
    """An ELF64 (little-endian) object with one 8-byte field replaced."""
    return data[:offset] + value.to_bytes(8, "little") + data[offset + 8:]


def test_out_of_range_elf_offsets_are_findings_not_crashes() -> None:
    xz = Path("/usr/bin/xz").read_bytes()
    far, count = 0xFFFFFFFFFFFFFFF0, int.from_bytes(xz[0x38:0x3A], "little")  # e_phnum
    headers = read_program(_with_field(xz, 0x20, far))  # e_phoff
    assert headers is not None and headers.abi == (64, "EM_X86_64")
    assert headers.malformed == (f"its program headers ({56 * count} bytes at offset {far:#x}) "
                                 f"lie outside the file ({len(xz)} bytes)"), headers.malformed
    phoff = int.from_bytes(xz[0x20:0x28], "little")
    interp = next(phoff + 56 * i for i in range(count)
                  if int.from_bytes(xz[phoff + 56 * i:phoff + 56 * i + 4], "little") == 3)
    segment = read_program(_with_field(xz, interp + 8, len(xz)))  # PT_INTERP's p_offset
    assert segment is not None and segment.malformed.startswith("its PT_INTERP segment (")
    found = check_image([(entry("bin/xz", _with_field(xz, 0x20, far)), "overlay:x")])
    assert [f.line() for f in found] == [
        f"/bin/xz [overlay:x]: a malformed ELF object: {headers.malformed}; no loader would map "
        "it (replace the file)"]
    intact = read_program(xz)
    assert intact is not None and intact.malformed == "" and intact.interpreter == LOADER


BOOTLOCAL = b"""#!/bin/sh
# /usr/local/bin/commented-out is never run
DHCLIENT=/usr/local/sbin/dhclient
SCRIPT='/opt/site/dhclient-script'
if [ -x "$DHCLIENT" ]; then
    out=$("$DHCLIENT" -nw -sf "$SCRIPT" \\
        -cf /usr/local/etc/dhclient.conf eth1 2>&1) || echo "$out"
fi
. /usr/local/etc/site.env
/opt/site/tool --once && /usr/bin/sethostname node1 >/dev/null
/proc/self/exe --version; mkdir -p /mnt/share
"""


def test_what_a_boot_script_or_template_runs_by_absolute_path_is_checked() -> None:
    """bootlocal.sh and the overlay's shell templates: each program they run by absolute path
    (a literal, a variable set to one, dhclient's `-sf`) is in the image and executable, each
    file they source is there; comments, arguments, run-time paths and other texts are not."""
    provides = parse_provides(b"dhcp.tcz\nusr/local/sbin/dhclient\n")
    tree = [directory(d) for d in ("bin", "opt", "opt/site", "usr", "usr/bin", "usr/local",
                                   "usr/local/etc", "srv")]
    entries = [(e, "base") for e in [*tree, entry("bin/sh", b"\x7fELF busybox")]] + [
        (entry("opt/bootlocal.sh", BOOTLOCAL), "overlay:site/opt/bootlocal.sh.j2"),
        (entry("opt/site/tool", b"#!/bin/sh\n", mode=0o644), "overlay:site/opt/site/tool"),
        (entry("usr/bin/sethostname", b"\x7fELF stand-in"), "base"),
        (entry("usr/local/etc/hook", b"# shellcheck shell=sh\n/opt/site/missing-too\n",
               mode=0o644), "overlay:site/usr/local/etc/hook.j2"),
        (entry("srv/exports", b"/srv/share 10.0.0.0/8(ro)\n", mode=0o644),
         "overlay:site/srv/exports.j2"),  # not shell: its first word is no command
        (entry("opt/site/plain", b"#!/bin/sh\n/opt/site/unchecked\n"), "overlay:site/plain"),
    ]
    lines = [f.line() for f in check_image(entries, provides=provides)]
    assert lines == [
        "/opt/bootlocal.sh [overlay:site/opt/bootlocal.sh.j2]: runs /usr/local/sbin/dhclient "
        "(line 6), which is not in the image (add `dhcp` to extensions.install)",
        "/opt/bootlocal.sh [overlay:site/opt/bootlocal.sh.j2]: runs /opt/site/dhclient-script "
        "(line 6), which is not in the image",
        "/opt/bootlocal.sh [overlay:site/opt/bootlocal.sh.j2]: sources /usr/local/etc/site.env "
        "(line 9), which is not in the image",
        "/opt/bootlocal.sh [overlay:site/opt/bootlocal.sh.j2]: runs /opt/site/tool (line 10), "
        "which is not executable (give /opt/site/tool a mode with x bits)",
        "/usr/local/etc/hook [overlay:site/usr/local/etc/hook.j2]: runs /opt/site/missing-too "
        "(line 2), which is not in the image",
    ]
    assert check_image(entries, provides=provides, ignore=["opt/bootlocal.sh",
                                                           "usr/local/etc/hook"]) == []


def test_the_example_without_its_dhclient_script_or_with_a_bash_one(site: Path) -> None:
    """The example's bootlocal.sh runs dhclient with `-sf /opt/tcbuild/dhclient-script`: without
    that file the check names it; with one that wants bash (ISC's), it names the interpreter."""
    script = site / "overlays/gameserver/opt/tcbuild/dhclient-script"
    recipe_path = site / "recipes/gameserver.toml"
    text = script.read_bytes()
    script.unlink()
    bootlocal = "/opt/bootlocal.sh [overlay:"
    missing = [line for line in lines(run(site, recipe_path, "without")) if line.startswith(
        bootlocal)]
    assert len(missing) == 1 and re.search(
        r": runs /opt/tcbuild/dhclient-script \(line \d+\), which is not in the image$",
        missing[0]), missing
    script.write_bytes(text.replace(b"#!/bin/sh\n", b"#!/bin/bash\n", 1))
    script.chmod(0o755)
    assert [line for line in lines(run(site, recipe_path, "bash")) if "dhclient-script" in line
            ] == [f"/opt/tcbuild/dhclient-script [overlay:{script}]: its interpreter /bin/bash "
                  "(#!) is not in the image"]
