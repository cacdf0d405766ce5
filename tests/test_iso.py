"""ISO images: written by pycdlib, read back by xorriso, booted by QEMU; official ISOs as input.

Structure is checked with an independent reader (xorriso, and the bytes of the MBR and the boot
info table by hand), reproducibility by comparing bytes, the input path over the loopback
mirror and from local files (one of them written by another tool: xorriso's mkisofs).
The UEFI side: the El Torito EFI entry's FAT image read back with mtools, and the isohybrid
MBR's EFI system partition found where that image is. Four QEMU boots: BIOS and UEFI, each as a
CD and as a USB stick (the BIOS CD with the kernel and core taken from the mirror's release ISO),
each waiting for the marker its bootlocal.sh prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tcbuild import ChecksumError, FetchOptions, build, fetch, load_recipe
from tcbuild.boot.iso import EFI_IMAGE, find_efi_loader, find_isolinux, mbr_id, plan_iso
from tcbuild.boot.pxelinux import for_recipe, parse
from tcbuild.errors import ArchiveError, RecipeError
from tcbuild.fleet.boottest import Firmware, Medium, iso_command, watch
from tcbuild.stages.build import BuildOptions
from tcbuild.stages.iso import build_iso, image_epoch

from .kit.bootkit import FAILURE_MARKERS
from .kit.mirrortree import ISO_NAMES, MirrorServer, MirrorTree
from .kit.requires import require_ovmf, require_tool

X64 = "15.x/x86_64"
DIST64 = f"{X64}/release/distribution_files"
ISO64 = f"{X64}/release/{ISO_NAMES['x86_64']}"
EPOCH = 1700000000  # 2023-11-14 22:13:20 UTC


def write_recipe(directory: Path, url: str, *, name: str = "node", iso: str | None = None,
                 flavor: str = "corepure64", boot: str = "", install: str = '"dhcp"',
                 overlay: str | None = None) -> Path:
    """A recipe in `directory`; `overlay` is the text of its /opt/bootlocal.sh."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (f'[tinycore]\nrelease = "15.x"\nflavor = "{flavor}"\nmirrors = ["{url}"]\n'
            + (f'iso = "{iso}"\n' if iso else "")
            + f"[extensions]\ninstall = [{install}]\n"
            + '[image]\ncompression = "fast"\n'
            + (f"[boot]\n{boot}\n" if boot else ""))
    if overlay is not None:
        script = directory / "overlay/opt/bootlocal.sh.j2"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(overlay)
        script.chmod(0o755)
        text += '[[overlay]]\nsource = "overlay"\n'
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def tcbuild(*args: str | Path, cwd: Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def xorriso(iso: Path, *commands: str) -> str:
    """xorriso's report on an ISO (its notes on stderr left out)."""
    require_tool("xorriso", "xorriso")
    result = subprocess.run(["xorriso", "-indev", str(iso), *commands], capture_output=True,
                            text=True, check=True, timeout=60)
    return result.stdout


def extract(iso: Path, target: Path) -> Path:
    """Every file of the ISO under its Rock Ridge name, extracted by xorriso."""
    require_tool("xorriso", "xorriso")
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/",
                    str(target)], capture_output=True, check=True, timeout=60)
    return target


def fat_file(image: Path, name: str) -> bytes:
    """A file of a FAT image, read by mtools (an independent reader)."""
    require_tool("mtype", "mtools")
    return subprocess.run(["mtype", "-i", str(image), f"::/{name}"], capture_output=True,
                          check=True, timeout=60, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}
                          ).stdout


def options(tmp_path: Path, out: str = "out") -> BuildOptions:
    return BuildOptions(out_dir=tmp_path / out, fetch=FetchOptions(cache_dir=tmp_path / "cache"))


# -- the plan ------------------------------------------------------------------------------------

def test_plan_puts_the_recipe_boot_section_into_isolinux_cfg(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path, "http://127.0.0.1:1/", name="game-server.01",
                                      boot='append = "base nodhcp console=ttyS0,115200"\n'
                                           'serial = "0 115200"\ntimeout = 30\n'
                                           'initrd_name = "core.hts.gz"\n'))
    isolinux = {"isolinux.bin": Path("/nowhere/isolinux.bin"),
                "ldlinux.c32": Path("/nowhere/ldlinux.c32")}
    # No file is read: the paths need not exist.
    plan = plan_iso(recipe, Path("/nowhere/vmlinuz64"), Path("/nowhere/core.hts.gz"),
                    epoch=EPOCH, isolinux=isolinux)
    assert plan.volume_id == "GAME_SERVER_01" and plan.epoch == EPOCH
    assert [(f.path, f.source) for f in plan.files[:4]] == [
        ("boot/vmlinuz64", Path("/nowhere/vmlinuz64")),
        ("boot/core.hts.gz", Path("/nowhere/core.hts.gz")),
        ("boot/isolinux/isolinux.bin", Path("/nowhere/isolinux.bin")),
        ("boot/isolinux/ldlinux.c32", Path("/nowhere/ldlinux.c32")),
    ]
    assert plan.directories == ("boot", "boot/isolinux")
    assert (plan.boot_image, plan.boot_catalog) == ("boot/isolinux/isolinux.bin",
                                                    "boot/isolinux/boot.cat")
    # The same config pxelinux gets, with the ISO's paths; SERIAL first, as isolinux wants it.
    config = parse(plan.config, "isolinux.cfg")
    assert config == for_recipe(recipe, "/boot/vmlinuz64", "/boot/core.hts.gz")
    assert config.serial == "0 115200" and config.timeout == 30
    assert config.label("tinycore").append == "base nodhcp console=ttyS0,115200"
    assert [line for line in plan.config.splitlines() if line.strip()][1] == "SERIAL 0 115200"


# -- the written ISO, read by xorriso -------------------------------------------------------------

def test_iso_command_writes_a_hybrid_el_torito_image(tmp_path: Path, mirror: MirrorServer
                                                     ) -> None:
    recipe = write_recipe(tmp_path, mirror.url,
                          boot='append = "base console=ttyS0,115200"\nserial = "0 115200"\n')
    result = tcbuild("iso", recipe, "--cache", tmp_path / "cache", "--json", cwd=tmp_path,
                     env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    iso = tmp_path / "build/node/node.iso"  # beside the build's outputs
    assert Path(report["iso"]) == Path("build/node/node.iso") and iso.is_file()
    data = iso.read_bytes()
    assert report["size"] == len(data) and report["sha256"] == hashlib.sha256(data).hexdigest()
    assert report["volume_id"] == "NODE" and not report["build"]["up_to_date"]
    assert sorted(p.name for p in iso.parent.iterdir()) == [
        "build.json", "core.hts.gz", "node.iso", "vmlinuz64"]  # no temp file left

    # El Torito: no emulation, 4 sectors loaded, boot info table, catalog; isohybrid MBR.
    toc = xorriso(iso, "-toc", "-report_el_torito", "plain", "-report_system_area", "plain")
    assert "Boot record  : El Torito , MBR isohybrid" in toc
    assert "Boot image   : '/boot/isolinux/isolinux.bin' , boot_info_table=on" in toc
    assert "Boot catalog : '/boot/isolinux/boot.cat'" in toc
    assert "ISO offers   : Rock_Ridge Joliet" in toc
    image = re.search(r"El Torito boot img :\s+1\s+BIOS\s+y\s+none\s+0x0000\s+0x00\s+4\s+(\d+)",
                      toc)
    assert image, toc
    assert re.search(r"El Torito img opts :\s+1\s+boot-info-table isohybrid-suitable", toc)
    efi = re.search(r"El Torito boot img :\s+2\s+UEFI\s+y\s+none\s+0x0000\s+0x00\s+(\d+)\s+"
                    r"(\d+)", toc)
    assert efi, toc
    assert f"El Torito img path :   2  /{EFI_IMAGE}" in toc
    assert re.search(r"MBR partition\s+:\s+1\s+0x80\s+0x00\s+0\s+\d+", toc)
    # The EFI system partition of a USB stick is the El Torito EFI image, sector for sector.
    assert re.search(rf"MBR partition\s+:\s+2\s+0x00\s+0xef\s+{int(efi[2]) * 4}\s+{efi[1]}\b",
                     toc), toc
    assert "GPT" in toc
    pvd = xorriso(iso, "-pvd_info")
    assert "Volume Id    : NODE" in pvd and "App Id       : TCBUILD" in pvd
    assert "Creation Time: 2023111422132000" in pvd  # SOURCE_DATE_EPOCH, in UTC

    # The MBR and the boot info table, by hand.
    assert data[510:512] == b"\x55\xaa" and data[446] == 0x80 and data[466] == 0xEF
    isolinux = find_isolinux()["isolinux.bin"].read_bytes()
    lba = int(image[1])
    boot = data[lba * 2048 : lba * 2048 + len(isolinux)]
    pvd_lba, file_lba, length, checksum = struct.unpack_from("<4I", boot, 8)
    assert (pvd_lba, file_lba, length) == (16, lba, len(isolinux))
    words = struct.unpack_from(f"<{(length - 64) // 4}I", boot, 64)
    assert checksum == sum(words) & 0xFFFFFFFF
    assert boot[:8] == isolinux[:8] and boot[64:] == isolinux[64:]

    # Rock Ridge names and modes, one time everywhere; the files are the build's.
    listing = xorriso(iso, "-find", "/", "-exec", "lsdl")
    for name in ("/boot/vmlinuz64", "/boot/core.hts.gz", "/boot/isolinux/isolinux.bin",
                 "/boot/isolinux/ldlinux.c32", "/boot/isolinux/isolinux.cfg"):
        assert re.search(rf"^-r--r--r-- .* Nov 14  2023 '{name}'$", listing, re.M), listing
    files = extract(iso, tmp_path / "x")
    for name in ("vmlinuz64", "core.hts.gz"):
        assert (files / "boot" / name).read_bytes() == (iso.parent / name).read_bytes()
    assert (files / "boot/isolinux/ldlinux.c32").read_bytes() == \
        find_isolinux()["ldlinux.c32"].read_bytes()
    config = parse((files / "boot/isolinux/isolinux.cfg").read_text(), "isolinux.cfg")
    assert config == for_recipe(load_recipe(recipe), "/boot/vmlinuz64", "/boot/core.hts.gz")

    # The UEFI image: syslinux.efi where firmware looks, its config the same text as isolinux's,
    # and the kernel and initrd, which syslinux.efi reads from its own file system.
    fat = files / EFI_IMAGE
    loader = find_efi_loader()
    assert fat_file(fat, "EFI/BOOT/BOOTX64.EFI") == loader["bootx64.efi"].read_bytes()
    assert fat_file(fat, "EFI/BOOT/LDLINUX.E64") == loader["ldlinux.e64"].read_bytes()
    assert fat_file(fat, "EFI/BOOT/SYSLINUX.CFG") == \
        (files / "boot/isolinux/isolinux.cfg").read_bytes()
    for name in ("vmlinuz64", "core.hts.gz"):
        assert fat_file(fat, f"boot/{name}") == (iso.parent / name).read_bytes()

    # Text output, and -o.
    again = tcbuild("iso", recipe, "--cache", tmp_path / "cache", "-o", tmp_path / "copy.iso",
                    cwd=tmp_path, env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].startswith("build/node: up to date (build ")
    assert lines[1].startswith(f"{tmp_path / 'copy.iso'}: 4.0 MiB, volume NODE, written in ")
    assert (tmp_path / "copy.iso").read_bytes() == data


def test_the_same_inputs_give_the_same_bytes_and_a_change_changes_them(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    recipe_path = write_recipe(tmp_path / "r", mirror.url, overlay="#!/bin/sh\necho one\n")
    first = build_iso(load_recipe(recipe_path), tmp_path / "1.iso", options(tmp_path, "a"))
    # A second, separate build, by the command, in another time zone (pycdlib stamps local
    # time unless told otherwise) and a second later at least.
    (tmp_path / "b").mkdir()
    second = tcbuild("iso", recipe_path, "--cache", tmp_path / "cache", "-o", tmp_path / "2.iso",
                     "--json", cwd=tmp_path / "b", env={"TZ": "Asia/Kolkata"})
    assert second.returncode == 0, second.stderr
    assert not json.loads(second.stdout)["build"]["up_to_date"]
    assert (tmp_path / "1.iso").read_bytes() == (tmp_path / "2.iso").read_bytes()

    def disk_id(iso: Path) -> int:
        return int.from_bytes(iso.read_bytes()[440:444], "little")

    (tmp_path / "r/overlay/opt/bootlocal.sh.j2").write_text("#!/bin/sh\necho two\n")
    changed = build_iso(load_recipe(recipe_path), tmp_path / "3.iso", options(tmp_path, "a"))
    assert changed.sha256 != first.sha256
    assert disk_id(tmp_path / "3.iso") != disk_id(tmp_path / "1.iso") != 0

    recipe_path.write_text(recipe_path.read_text() + '[boot]\nappend = "base text"\n')
    relabelled = build_iso(load_recipe(recipe_path), tmp_path / "4.iso", options(tmp_path, "a"))
    assert relabelled.build.build_id != changed.build.build_id
    assert relabelled.sha256 not in (first.sha256, changed.sha256)
    plan = plan_iso(load_recipe(recipe_path), relabelled.build.kernel, relabelled.build.initrd,
                    epoch=image_epoch(relabelled.build.out_dir), isolinux=find_isolinux(),
                    efi=find_efi_loader())
    assert disk_id(tmp_path / "4.iso") == mbr_id(plan)


# -- atomic writes and bad inputs -----------------------------------------------------------------

def test_a_full_disk_leaves_the_old_iso_and_no_partial_file(
    tmp_path: Path, mirror: MirrorServer, tiny_disk: Path
) -> None:
    recipe = write_recipe(tmp_path, mirror.url)
    target = tiny_disk / "node.iso"
    target.write_bytes(b"the previous ISO\n")
    result = tcbuild("iso", recipe, "--cache", tmp_path / "cache", "-o", target, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "No space left on device\n"
    assert [p.name for p in tiny_disk.iterdir()] == ["node.iso"]
    assert target.read_bytes() == b"the previous ISO\n"


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path: Path, mirror: MirrorServer,
                                                   mirror_tree: MirrorTree) -> None:
    def run(recipe: Path, *args: str | Path) -> tuple[int, list[str]]:
        result = tcbuild("iso", recipe, "--cache", tmp_path / "cache", *args, cwd=tmp_path)
        assert result.stdout == "" and not (tmp_path / "build").exists()
        return result.returncode, result.stderr.splitlines()

    empty = tmp_path / "empty"
    empty.mkdir()
    good = write_recipe(tmp_path / "good", mirror.url)
    assert run(good, "--bootloader-dir", empty) == (
        1, [f"isolinux.bin not found in {empty} (apt-get install isolinux)"])
    shutil.copy(find_isolinux()["isolinux.bin"], empty)
    assert run(good, "--bootloader-dir", empty) == (
        1, [f"ldlinux.c32 not found in {empty} (apt-get install syslinux-common)"])

    mirror.fail(ISO64, "corrupt")
    code, lines = run(write_recipe(tmp_path / "m", mirror.url, iso=ISO_NAMES["x86_64"]))
    assert code == 1 and len(lines) == 1
    assert re.fullmatch(rf"CorePure64-15\.0\.iso: checksum mismatch: expected md5 "
                        rf"{mirror_tree.md5s[ISO64]}, got [0-9a-f]{{32}} "
                        rf"\(from {re.escape(mirror.url_for(ISO64))}\)", lines[0]), lines

    (tmp_path / "bad/not.iso").parent.mkdir()
    (tmp_path / "bad/not.iso").write_bytes(b"\0" * 40000)
    code, lines = run(write_recipe(tmp_path / "bad", mirror.url, iso="./not.iso"))
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'bad/not.iso'}: not an ISO 9660 image (")

    shutil.copy(mirror_tree.path(ISO64), tmp_path / "bad/pure64.iso")
    assert run(write_recipe(tmp_path / "bad", mirror.url, iso="./pure64.iso", flavor="core")) == (
        1, [f"{tmp_path / 'bad/pure64.iso'}: no /boot/vmlinuz (its /boot has: corepure64.gz, "
            "vmlinuz64)"])

    recipe = tmp_path / "keys.toml"
    for value, problem in [
        ("3", "expected an ISO file name like \"CorePure64-15.0.iso\" or a path like "
              "\"./my.iso\", got an integer"),
        ('"core.img"', "expected an ISO file name like \"CorePure64-15.0.iso\" or a path like "
                       "\"./my.iso\", got 'core.img'"),
        ('"./gone.iso"', f"file './gone.iso' does not exist (looked for {tmp_path / 'gone.iso'})"),
        ('"CorePure64-14.0.iso"', "'CorePure64-14.0.iso' is not a 15.x release (tinycore.release)"),
        ('"Core Pure.iso"', "'Core Pure.iso' is not a file name on the mirror (a local file needs "
                            "a path like \"./my.iso\")"),
    ]:
        recipe.write_text(f'[tinycore]\nrelease = "15.x"\niso = {value}\n')
        assert run(recipe) == (2, [f"{recipe}: tinycore.iso: {problem}"])
        with pytest.raises(RecipeError):
            load_recipe(recipe)


# -- official ISOs as input -----------------------------------------------------------------------

def test_kernel_and_core_from_the_mirror_iso_over_http(tmp_path: Path, mirror: MirrorServer,
                                                       mirror_tree: MirrorTree) -> None:
    from_iso = load_recipe(write_recipe(tmp_path / "iso", mirror.url, iso=ISO_NAMES["x86_64"]))
    inputs = fetch(from_iso, FetchOptions(cache_dir=tmp_path / "cache"))
    assert inputs.kernel.path.read_bytes() == mirror_tree.read(f"{DIST64}/vmlinuz64")
    assert [p.path.read_bytes() for p in inputs.core] == [
        mirror_tree.read(f"{DIST64}/corepure64.gz")]
    assert (inputs.kernel.origin, inputs.core[0].origin) == ("CorePure64-15.0.iso",) * 2
    assert inputs.kernel_version == "6.6.8-tinycore64"
    assert [e.name for e in inputs.extensions] == ["dhcp.tcz"]  # still from the mirror
    assert mirror.count(f"{ISO64}.md5.txt") == 1 and mirror.count(ISO64) == 2
    assert mirror.count("distribution_files") == 0
    assert inputs.used[ISO64] == hashlib.sha256(mirror_tree.read(ISO64)).hexdigest()

    mirror.reset()  # cached: no request, and the ISO is not opened again
    again = fetch(from_iso, FetchOptions(cache_dir=tmp_path / "cache", offline=True))
    assert mirror.requests == [] and again.kernel.origin == again.core[0].origin == "cache"
    assert again.kernel.sha256 == inputs.kernel.sha256

    # The same bytes as from distribution_files: the same build.
    plain = load_recipe(write_recipe(tmp_path / "plain", mirror.url))
    a = build(from_iso, options(tmp_path, "a"))
    b = build(plain, options(tmp_path, "b"))
    assert a.build_id == b.build_id and a.initrd.read_bytes() == b.initrd.read_bytes()

    x86 = load_recipe(write_recipe(tmp_path / "x86", mirror.url, iso=ISO_NAMES["x86"],
                                   flavor="core"))
    inputs = fetch(x86, FetchOptions(cache_dir=tmp_path / "cache"))
    dist32 = "15.x/x86/release/distribution_files"
    assert inputs.kernel.name == "vmlinuz" and [p.name for p in inputs.core] == ["core.gz"]
    assert inputs.kernel.path.read_bytes() == mirror_tree.read(f"{dist32}/vmlinuz")
    assert inputs.core[0].path.read_bytes() == mirror_tree.read(f"{dist32}/core.gz")
    assert inputs.kernel_version == "6.6.8-tinycore"
    assert mirror.count(f"15.x/x86/release/{ISO_NAMES['x86']}") == 2


def test_kernel_and_core_from_local_isos(tmp_path: Path, mirror: MirrorServer,
                                         mirror_tree: MirrorTree) -> None:
    # One written by another tool than pycdlib: xorriso's mkisofs (Rock Ridge, Joliet).
    require_tool("xorriso", "xorriso")
    tree = tmp_path / "tree/boot"
    tree.mkdir(parents=True)
    for name in ("vmlinuz64", "corepure64.gz", "rootfs64.gz", "modules64.gz"):
        shutil.copy(mirror_tree.path(f"{DIST64}/{name}"), tree / name)
    (tmp_path / "site/isos").mkdir(parents=True)
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-V", "TC-custom", "-o",
                    str(tmp_path / "site/isos/tc.iso"), str(tmp_path / "tree")],
                   capture_output=True, check=True, timeout=60)
    recipe = load_recipe(write_recipe(tmp_path / "site", mirror.url, iso="isos/tc.iso"))
    assert recipe.iso is not None and recipe.iso.path == tmp_path / "site/isos/tc.iso"
    inputs = fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache"))
    assert inputs.kernel.path.read_bytes() == (tree / "vmlinuz64").read_bytes()
    assert inputs.core[0].path.read_bytes() == (tree / "corepure64.gz").read_bytes()
    assert mirror.count("release/") == 0
    assert "local/tc.iso" in inputs.used

    # The mirror's ISO copied beside a recipe, with its .md5.txt: verified.
    local = tmp_path / "copy"
    local.mkdir()
    shutil.copy(mirror_tree.path(ISO64), local / "CorePure64-15.0.iso")
    shutil.copy(mirror_tree.path(f"{ISO64}.md5.txt"), local / "CorePure64-15.0.iso.md5.txt")
    recipe = load_recipe(write_recipe(local, mirror.url, iso="./CorePure64-15.0.iso"))
    assert fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache")).kernel.path.read_bytes() \
        == mirror_tree.read(f"{DIST64}/vmlinuz64")
    (local / "CorePure64-15.0.iso.md5.txt").write_text(f"{'0' * 32}  CorePure64-15.0.iso\n")
    with pytest.raises(ChecksumError, match=r"CorePure64-15\.0\.iso: checksum mismatch: "
                                            r"expected md5 0{32} \(CorePure64-15\.0\.iso\.md5"):
        fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache"))
    (local / "CorePure64-15.0.iso.md5.txt").unlink()
    whole = mirror_tree.read(ISO64)
    (local / "CorePure64-15.0.iso").write_bytes(whole[: len(whole) // 2])  # cut off, no md5
    with pytest.raises(ArchiveError, match=rf"CorePure64-15\.0\.iso: truncated: "
                                           rf"{len(whole) // 2} of its \d+ bytes"):
        fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache"))
    (local / "CorePure64-15.0.iso").write_bytes(b"not an ISO at all")
    with pytest.raises(ArchiveError, match="not an ISO 9660 image"):
        fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache"))


# -- booting under QEMU ---------------------------------------------------------------------------

BOOTLOCAL = """#!/bin/sh
[ -e /usr/local/bin/dhcp-standin ] || { echo "BOOT-CHECK-FAILED: no dhcp" >/dev/ttyS0; exit 1; }
echo "ISO-MARKER {{ recipe_name }} {{ kernel_version }} host=$(hostname)" >/dev/ttyS0
"""
ISO_FAILURES = (*FAILURE_MARKERS, "BOOT-CHECK-FAILED", "Could not find kernel image",
                "isolinux.bin missing or corrupt", "Operating system load error")


@pytest.mark.parametrize(("medium", "source", "firmware"), [
    ("cd", "iso", "bios"), ("usb", "distribution", "bios"),
    ("cd", "distribution", "uefi"), ("usb", "distribution", "uefi")])
def test_the_iso_boots(tmp_path: Path, boot_mirror_tree: MirrorTree, medium: str,
                       source: str, firmware: str) -> None:
    """As a CD with the kernel and core out of the mirror's release ISO; as a USB stick from
    the distribution files; both again under UEFI (OVMF: the El Torito EFI entry as a CD, the
    EFI system partition as a stick). The loader's banner on the serial line proves SERIAL; the
    hostname proves the APPEND line reached the kernel."""
    if firmware == "uefi":
        require_ovmf()
    with MirrorServer(boot_mirror_tree.root) as mirror:
        recipe = load_recipe(write_recipe(
            tmp_path, mirror.url, name=medium, overlay=BOOTLOCAL,
            iso=ISO_NAMES["x86_64"] if source == "iso" else None,
            boot=f'append = "console=ttyS0,115200 panic=-1 host={medium}-node"\n'
                 'serial = "0 115200"\n'))
        result = build_iso(recipe, None, options(tmp_path))
        if source == "iso":
            assert mirror.count(ISO64) == 2 and mirror.count("distribution_files") == 0
    version = boot_mirror_tree.kernel_versions["x86_64/modules64.gz"]
    log = tmp_path / "serial.log"
    expect = f"ISO-MARKER {medium} {version} host={medium}-node"
    outcome = watch(iso_command(result.path, log, Medium(medium), Firmware(firmware)), log,
                    expect, 180, ISO_FAILURES, console_to_log=False)
    if not outcome.ok:
        pytest.fail(f"{medium} did not boot ({outcome.reason}, {outcome.seconds:.1f} s):\n"
                    f"{outcome.tail}")
    serial = log.read_text(errors="replace")
    assert ("ISOLINUX" if firmware == "bios" else "BdsDxe: starting Boot") in serial  # OVMF
    assert "tc-ext: dhcp installed" in serial
    print(f"{firmware} {medium}: ISO written in {result.seconds:.2f} s, booted in "
          f"{outcome.seconds:.1f} s")
