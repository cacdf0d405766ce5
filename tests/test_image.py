"""`tcbuild build` against the loopback mirror, cross-checked with the real cpio and bsdtar."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from tcbuild import InputError, RecipeError, load_recipe
from tcbuild.formats.manifest import diff, load_listing, read_manifest
from tcbuild.formats.newc import iter_initramfs, read_entries
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions, BuildResult, build

from .conftest import small_overlay
from .kit.mirrortree import MirrorServer, MirrorTree
from .kit.requires import require_root, require_tool

ROOT = Path(__file__).resolve().parent.parent
X64 = "15.x/x86_64"


def recipe_file(tmp_path: Path, mirror: str, body: str = "", install: str = '"dhcp", "nfs-utils"',
                mode: str = "unpacked", overlay: bool = True) -> Path:
    """A recipe beside a small overlay and a copy of the example's local extension."""
    shutil.copytree(ROOT / "recipes/extras", tmp_path / "extras", dirs_exist_ok=True)
    small_overlay(tmp_path / "overlay")
    path = tmp_path / "r.toml"
    overlay_table = '[[overlay]]\nsource = "overlay"\n' if overlay else ""
    path.write_text(
        f'[tinycore]\nrelease = "15.x"\nflavor = "corepure64"\nmirrors = ["{mirror}"]\n'
        f'[extensions]\ninstall = [{install}]\nlocal = ["extras/nrpe.tcz"]\nmode = "{mode}"\n'
        f'{overlay_table}{body}\n[vars]\nnfs_server = "10.1.1.1"\n'
    )
    return path


def run_build(tmp_path: Path, recipe: Path, out: str = "out", **kw: object) -> BuildResult:
    options = BuildOptions(out_dir=tmp_path / out, fetch=FetchOptions(cache_dir=tmp_path / "c"),
                           **kw)
    return build(load_recipe(recipe), options)  # type: ignore[arg-type]


def members(path: Path) -> list[bytes]:
    """Each gzip member of a file, decompressed separately."""
    data, out = path.read_bytes(), []
    while data:
        d = zlib.decompressobj(31)
        out.append(d.decompress(data))
        data = d.unused_data.lstrip(b"\0")
    return out


def tool_listing(archive: bytes, tool: list[str]) -> list[list[str]]:
    result = subprocess.run(tool, input=archive, capture_output=True, check=True)
    return [line.split() for line in result.stdout.decode().splitlines() if line.strip()]


def by_name(rows: list[list[str]]) -> dict[str, list[str]]:
    """`cpio -itv` / `bsdtar -tv` rows keyed by path (the field after the date)."""
    table = {}
    for row in rows:
        name = row[-1]
        for arrow in ("->", "link"):  # symlink target, bsdtar's "link to" of a hard link
            if arrow in row:
                name = row[row.index(arrow) - 1]
        table[name.removeprefix("./")] = row
    return table


def test_build_is_reproducible_up_to_date_and_keeps_the_base(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree
) -> None:
    require_tool("cpio", "cpio")
    recipe = recipe_file(tmp_path, mirror.url)
    first = run_build(tmp_path, recipe)
    assert not first.up_to_date
    assert {p.name for p in first.out_dir.iterdir()} == {"vmlinuz64", "core.hts.gz",
                                                           "build.json"}
    assert first.kernel.read_bytes() == mirror_tree.read(
        f"{X64}/release/distribution_files/vmlinuz64")

    mirror.reset()
    again = run_build(tmp_path, recipe)
    assert again.up_to_date and mirror.requests == []
    other = run_build(tmp_path, recipe, out="other", force=True)
    assert other.initrd.read_bytes() == first.initrd.read_bytes()
    assert (other.out_dir / "build.json").read_bytes() == (first.out_dir / "build.json"
                                                           ).read_bytes()

    # every base entry comes out exactly as GNU cpio lists it in the base (mtime included)
    base: dict[str, list[str]] = {}
    for part in ("rootfs64.gz", "modules64.gz"):
        archive = members(mirror_tree.path(f"{X64}/release/distribution_files/{part}"))[0]
        base.update(by_name(tool_listing(archive, ["cpio", "-itv", "--numeric-uid-gid"])))
    out: dict[str, list[str]] = {}
    listed_by_bsdtar: dict[str, list[str]] = {}
    for archive in members(first.initrd):
        out.update(by_name(tool_listing(archive, ["cpio", "-itv", "--numeric-uid-gid"])))
        listed_by_bsdtar.update(by_name(tool_listing(archive, ["bsdtar", "-tvnf", "-"])))
    assert set(listed_by_bsdtar) == set(out) == {e.path for e in iter_initramfs(first.initrd)}
    for name, row in listed_by_bsdtar.items():  # mode, owner, size (or device) agree
        assert row[0] == out[name][0] and row[2:4] == out[name][2:4], (name, row, out[name])
    for name, row in base.items():
        if name in ("opt/bootlocal.sh",):  # the overlay replaces it
            continue
        got = out[name]
        assert got[0] == row[0] and got[2:4] == row[2:4], (name, row, got)  # mode, owner
        if row[0][0] in "-l" and not name.startswith("usr/bin/pair-"):
            assert got[4] == row[4], name  # size (hard links compared below)
    assert out["tmp"][0] == "drwxrwxrwt" and out["tmp"][2:4] == ["0", "50"]
    assert out["opt"][0] == "drwxrwsr-x" and out["opt"][2:4] == ["0", "50"]
    assert out["dev/console"][0] == "crw--w--w-" and out["dev/console"][4:6] == ["5,", "1"]
    assert out["bin/su-standin"][0] == "-rwsr-xr-x"
    assert out["."][2:4] == ["0", "0"] and out["usr"][2:4] == ["0", "0"]  # not 1001:50


def test_an_output_changed_after_its_build_is_rebuilt_even_at_the_same_size(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    recipe = recipe_file(tmp_path, mirror.url, overlay=False)
    first = run_build(tmp_path, recipe)
    good = {path: path.read_bytes() for path in (first.kernel, first.initrd)}

    def flip(path: Path, keep_mtime: bool = False) -> None:
        """One byte changed in place: the same size and inode (and mtime, if kept)."""
        before = path.stat()
        with path.open("r+b") as f:
            f.seek(before.st_size // 2)
            byte = f.read(1)[0]
            f.seek(before.st_size // 2)
            f.write(bytes([byte ^ 1]))
        if keep_mtime:
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_size == before.st_size and path.read_bytes() != good[path]

    for path in good:
        flip(path)
        assert not run_build(tmp_path, recipe).up_to_date and path.read_bytes() == good[path]
    time.sleep(0.05)  # a later clock tick than the build's renames (which set the ctimes)
    flip(first.initrd, keep_mtime=True)  # the ctime still tells
    assert not run_build(tmp_path, recipe).up_to_date
    assert first.initrd.read_bytes() == good[first.initrd]
    copy = tmp_path / "copy"  # replaced by a copy of itself: hashed, found the same
    shutil.copy2(first.initrd, copy)
    copy.replace(first.initrd)
    assert run_build(tmp_path, recipe).up_to_date


@pytest.mark.root
def test_extraction_by_gnu_cpio_keeps_devices_and_hard_links(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    require_tool("cpio", "cpio")
    require_root("extracting device nodes and owners")
    result = run_build(tmp_path, recipe_file(tmp_path, mirror.url))
    root = tmp_path / "x"
    root.mkdir()
    for archive in members(result.initrd):
        subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=archive,
                       cwd=root, check=True)
    console = (root / "dev/console").lstat()
    assert stat.S_ISCHR(console.st_mode) and os.major(console.st_rdev) == 5
    a, b = (root / "usr/bin/pair-a").stat(), (root / "usr/bin/pair-b").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2 and a.st_size > 0
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "usr/local/etc/nagios/nrpe.cfg").is_file()


def test_extensions_unpacked_with_markers_and_provenance(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    local = tmp_path / "tool"
    (local / "usr/local/tce.installed").mkdir(parents=True)
    (local / "usr/local/bin").mkdir(parents=True)
    script = local / "usr/local/tce.installed/tool"
    script.write_text("#!/bin/sh\necho tool installed\n")
    script.chmod(0o755)
    (local / "usr/local/bin/tool").write_text("#!/bin/sh\n")
    recipe = recipe_file(tmp_path, mirror.url)
    recipe.write_text(recipe.read_text().replace('local = ["extras/nrpe.tcz"]',
                                                 'local = ["extras/nrpe.tcz", "tool"]'))
    result = run_build(tmp_path, recipe)
    listing = load_listing(result.out_dir)
    entries = listing.entries
    assert entries["usr/local/bin/dhcp-standin"]["origin"] == "extension:dhcp.tcz"
    assert entries["usr/local/bin/tool"]["origin"] == "extension:tool.tcz"
    assert entries["usr/local/tce.installed/dhcp"]["size"] == 0
    assert entries["usr/local/tce.installed/tool"]["mode"] == "0755"
    setup = next(e for e in iter_initramfs(result.initrd) if e.path == "tmp/setup.lst")
    assert setup.data == b"/usr/local/tce.installed/tool\n"
    manifest = read_manifest(result.out_dir)
    assert manifest is not None
    assert [i.name for i in manifest.inputs][-2:] == ["nrpe.tcz", "tool.tcz"]


def test_onboot_mode_ships_tcz_files_and_list(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree
) -> None:
    result = run_build(tmp_path, recipe_file(tmp_path, mirror.url, mode="onboot"))
    files = {e.path: e for e in iter_initramfs(result.initrd)}
    order = ["dhcp.tcz", "libtirpc.tcz", "rpcbind.tcz", "filesystems-6.6.8-tinycore64.tcz",
             "nfs-utils.tcz", "openssl.tcz", "nrpe.tcz"]
    assert files["tmp/builtin/onboot.lst"].data == "".join(f"{n}\n" for n in order).encode()
    assert files["tmp/builtin/optional/dhcp.tcz"].data == mirror_tree.read(
        f"{X64}/tcz/dhcp.tcz")
    assert files["tmp/builtin/optional/nfs-utils.tcz.dep"].data == (
        b"rpcbind.tcz\nlibtirpc.tcz\nfilesystems-6.6.8-tinycore64.tcz\n")
    assert "tmp/builtin/optional/dhcp.tcz.dep" not in files
    assert "usr/local/bin/dhcp-standin" not in files
    assert stat.S_IMODE(files["tmp"].mode) == 0o1777


def test_overlay_templates_attributes_and_errors(tmp_path: Path, mirror: MirrorServer) -> None:
    body = '[files."/opt/bootlocal.sh"]\nmode = "0775"\nowner = "root"\ngroup = "staff"\n'
    recipe = recipe_file(tmp_path, mirror.url, body)
    (tmp_path / "overlay/etc").mkdir()
    (tmp_path / "overlay/etc/motd.j2").write_text(
        "{## a comment ##}node of {{ recipe_name }} on {{ release }}/{{ kernel_version }}, "
        "nfs {{ nfs_server }}, {{ unset | default('fallback') }}, ${#shell} ${var%x}\n")
    result = run_build(tmp_path, recipe)
    files = {e.path: e for e in iter_initramfs(result.initrd)}
    assert files["etc/motd"].data == (b"node of r on 15.x/6.6.8-tinycore64, nfs 10.1.1.1, "
                                      b"fallback, ${#shell} ${var%x}\n")
    assert "etc/motd.j2" not in files
    bootlocal = files["opt/bootlocal.sh"]
    assert (stat.S_IMODE(bootlocal.mode), bootlocal.uid, bootlocal.gid) == (0o775, 0, 50)
    assert (stat.S_IMODE(files["opt"].mode), files["opt"].gid) == (0o2775, 50)  # kept

    before = {p.name: p.read_bytes() for p in result.out_dir.iterdir()}
    (tmp_path / "overlay/etc/motd.j2").write_text("line one\n{{ nfs_sever }}\n")
    with pytest.raises(InputError, match=r"motd\.j2:2: undefined template variable 'nfs_sever'"):
        run_build(tmp_path, recipe)
    assert {p.name: p.read_bytes() for p in result.out_dir.iterdir()} == before  # untouched

    (tmp_path / "overlay/etc/motd.j2").unlink()
    (tmp_path / "overlay/etc/escape").symlink_to("../../../outside")
    with pytest.raises(InputError, match=r"escape: symlink target '../../../outside' escapes"):
        run_build(tmp_path, recipe)
    (tmp_path / "overlay/etc/escape").unlink()
    os.mkfifo(tmp_path / "overlay/etc/fifo")
    with pytest.raises(InputError, match=r"fifo: only files, directories and symlinks"):
        run_build(tmp_path, recipe)


def test_removal_and_hard_link_data(tmp_path: Path, mirror: MirrorServer) -> None:
    recipe = recipe_file(tmp_path, mirror.url,
                         '[image]\nremove = ["usr/bin/pair-b", "lib/modules/*/kernel/fs/nfs"]\n')
    files = {e.path: e for e in iter_initramfs(run_build(tmp_path, recipe).initrd)}
    assert "usr/bin/pair-b" not in files and "lib/modules/6.6.8-tinycore64/kernel/fs" in files
    assert not any(p.startswith("lib/modules/6.6.8-tinycore64/kernel/fs/nfs") for p in files)
    pair = files["usr/bin/pair-a"]
    assert pair.nlink == 1 and pair.size > 0  # the data moved off the removed name

    recipe.write_text(recipe.read_text().replace('"usr/bin/pair-b"', '"usr/bin/nothing*"'))
    with pytest.raises(InputError, match=r"image\.remove\[0\]: 'usr/bin/nothing\*' matches "
                       "nothing in the base"):
        run_build(tmp_path, recipe)
    recipe.write_text(recipe.read_text().replace("[image]\n", '[image]\noutput = "append"\n'))
    with pytest.raises(RecipeError, match="append mode cannot remove base entries"):
        load_recipe(recipe)


def test_append_mode_keeps_the_base_bytes_and_the_same_view(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree
) -> None:
    recipe = recipe_file(tmp_path, mirror.url)
    repacked = run_build(tmp_path, recipe, out="repack")
    appended = run_build(tmp_path, recipe, out="append", output="append")
    core = mirror_tree.read(f"{X64}/release/distribution_files/corepure64.gz")
    data = appended.initrd.read_bytes()
    assert data.startswith(core)
    added = {e.path: e for segment in members(appended.initrd)[2:]  # after rootfs + modules
             for e in read_entries(__import__("io").BytesIO(segment), source="seg")}
    base = {e.path: e for e in iter_initramfs(
        mirror_tree.path(f"{X64}/release/distribution_files/corepure64.gz"))}
    for parent in ("usr", "usr/local", "opt"):
        assert (added[parent].mode, added[parent].uid, added[parent].gid) == (
            base[parent].mode, base[parent].uid, base[parent].gid)
    assert "tmp" not in added and "bin/busybox" not in added
    result = diff(load_listing(repacked.out_dir), load_listing(appended.out_dir))
    assert result == {"added": [], "removed": [], "content": [], "metadata": []}


def test_source_date_epoch_sets_the_time_of_added_entries(
    tmp_path: Path, mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = recipe_file(tmp_path, mirror.url)
    default = {e.path: e.mtime for e in iter_initramfs(run_build(tmp_path, recipe).initrd)}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    stamped = {e.path: e.mtime for e in iter_initramfs(run_build(tmp_path, recipe).initrd)}
    assert stamped["opt/bootlocal.sh"] == 1700000000 != default["opt/bootlocal.sh"]
    assert stamped["bin/busybox"] == default["bin/busybox"]


def test_build_json_records_inputs_and_outputs(tmp_path: Path, mirror: MirrorServer) -> None:
    result = run_build(tmp_path, recipe_file(tmp_path, mirror.url))
    manifest = read_manifest(result.out_dir)
    assert manifest is not None
    assert manifest.initrd.sha256 == hashlib.sha256(
        result.initrd.read_bytes()).hexdigest()
    assert manifest.kernel_version == "6.6.8-tinycore64"
    origins = {e["origin"] for e in manifest.entries}
    assert {"base", "extension:dhcp.tcz", "tcbuild"} <= origins
    assert any(o.startswith("overlay:") for o in origins)


def test_inventory_values_reach_the_templates_once(tmp_path: Path, mirror: MirrorServer) -> None:
    recipe = recipe_file(tmp_path, mirror.url)
    shutil.copy(ROOT / "examples/cluster.toml", tmp_path / "cluster.toml")
    (tmp_path / "overlay/usr/local/etc/route.j2").write_text(
        "{{ external_gateway }} {{ external_netmask }} {{ external_broadcast }}\n")
    recipe.write_text('inventory = "cluster.toml"\n' + recipe.read_text())
    with pytest.raises(RecipeError, match=r"vars\.nfs_server: also set by the inventory "):
        run_build(tmp_path, recipe)
    recipe.write_text(recipe.read_text().replace('nfs_server = "10.1.1.1"', 'site = "x"'))
    files = {e.path: e for e in iter_initramfs(run_build(tmp_path, recipe).initrd)}
    assert files["usr/local/etc/route"].data == b"172.16.1.1 255.255.0.0 172.16.255.255\n"
    assert files["usr/local/etc/site.conf"].data == b"server 10.1.1.1\n"


def test_append_refuses_to_replace_a_base_hard_link(tmp_path: Path, mirror: MirrorServer) -> None:
    recipe = recipe_file(tmp_path, mirror.url, '[image]\noutput = "append"\n')
    (tmp_path / "overlay/usr/bin").mkdir(parents=True)
    (tmp_path / "overlay/usr/bin/pair-a").write_text("replaced\n")
    with pytest.raises(InputError, match=r"^/usr/bin/pair-a is a hard link in the base; "
                       r"replacing it in append mode would change every name of it"):
        run_build(tmp_path, recipe)
    recipe.write_text(recipe.read_text().replace('output = "append"', 'output = "repack"'))
    files = {e.path: e for e in iter_initramfs(run_build(tmp_path, recipe).initrd)}
    assert files["usr/bin/pair-a"].data == b"replaced\n" and files["usr/bin/pair-b"].size > 0


def test_append_keeps_compressed_extensions_in_the_cache_and_the_same_bytes(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    recipe = recipe_file(tmp_path, mirror.url, '[image]\noutput = "append"\n')
    run_build(tmp_path, recipe)
    derived = tmp_path / "c/derived"
    kept = {p for p in derived.rglob("*") if p.is_file()}
    assert kept  # the base's and extensions' indexes, the extensions' compressed parts
    (tmp_path / "overlay/opt/bootlocal.sh").write_text("#!/bin/sh\necho changed\n")
    warm = run_build(tmp_path, recipe)
    new = {p for p in derived.rglob("*") if p.is_file()} - kept
    assert len(new) == warm.compressed == 1  # only the rest (the overlay's run) compressed
    cold = build(load_recipe(recipe), BuildOptions(
        out_dir=tmp_path / "cold", fetch=FetchOptions(cache_dir=tmp_path / "c2")))
    assert warm.initrd.read_bytes() == cold.initrd.read_bytes()
    assert (warm.out_dir / "build.json").read_bytes() == (cold.out_dir / "build.json").read_bytes()
    before = {path: path.read_bytes() for path in kept | new}
    summed = {p for p, data in before.items() if hashlib.sha256(data[32:]).digest() == data[:32]}
    assert 0 < len(summed) < len(before)  # the inputs' data files are checked a file at a time
    for path in kept | new:  # a damaged copy is never used, and is replaced
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(data)
    again = run_build(tmp_path, recipe, out="again", force=True)
    assert again.initrd.read_bytes() == warm.initrd.read_bytes()
    damaged = [p for p in summed if hashlib.sha256(p.read_bytes()[32:]).digest()
               != p.read_bytes()[:32]]
    assert len(damaged) == 1  # the overlay's run before the edit, which no build uses now
    assert all(p.read_bytes() == before[p] for p in before.keys() - summed)  # made again
