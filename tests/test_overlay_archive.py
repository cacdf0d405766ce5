"""Overlay archives (tar, tar.gz, tar.xz, zip, newc cpio) made by the real bsdtar, read through
libarchive, built into images and compared with the same tree given as a directory."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcbuild import InputError, load_recipe
from tcbuild.formats.newc import Entry, iter_initramfs
from tcbuild.image.overlay import read_overlay
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions, BuildResult, build

from .conftest import small_overlay
from .kit.mirrortree import MirrorServer
from .kit.requires import require_tool

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {"tar": [], "tar.gz": [], "tar.xz": [], "zip": [], "cpio": ["--format", "newc"]}


def recipe_file(tmp_path: Path, mirror: str, body: str = "") -> Path:
    """A recipe with one overlay (`overlay/`, a script and a template) and no extension."""
    small_overlay(tmp_path / "overlay")
    path = tmp_path / "r.toml"
    path.write_text(f'[tinycore]\nrelease = "15.x"\nmirrors = ["{mirror}"]\n'
                    f'[[overlay]]\nsource = "overlay"\n{body}\n[vars]\nnfs_server = "10.1.1.1"\n')
    return path


def run_build(tmp_path: Path, recipe: Path, out: str = "out") -> BuildResult:
    return build(load_recipe(recipe), BuildOptions(
        out_dir=tmp_path / out, fetch=FetchOptions(cache_dir=tmp_path / "c", progress=False)))


def cpio_segments(initrd: Path) -> bytes:
    """The initrd's archives, decompressed (gzip members one after the other)."""
    data, out = initrd.read_bytes(), b""
    while data:
        d = zlib.decompressobj(31)
        out += d.decompress(data)
        data = d.unused_data.lstrip(b"\0")
    return out


def bsdtar_listing(data: bytes | Path) -> dict[str, list[str]]:
    """`bsdtar -tv` rows by path (a symlink's or hard link's own name, before its arrow). A zip
    is listed from its file: its modes are in the central directory, which a pipe never gets to."""
    source = "-" if isinstance(data, bytes) else str(data)
    result = subprocess.run(["bsdtar", "-tvf", source], input=data if source == "-" else None,
                            capture_output=True, check=True)
    table = {}
    for line in result.stdout.decode().splitlines():
        row = line.split()
        arrow = next((row.index(a) for a in ("->", "link") if a in row), len(row))
        table[row[arrow - 1].removeprefix("./").rstrip("/")] = row
    return table


def bsdtar(archive: Path, tree: Path, *options: str) -> Path:
    """`tree`'s contents as `archive` (the format from its suffix), owned by 1234:1234."""
    require_tool("bsdtar", "libarchive-tools")
    subprocess.run(["bsdtar", "-a", "-cf", str(archive), "--uid", "1234", "--gid", "1234",
                    *options, "-C", str(tree), "."], check=True)
    return archive


def image(initrd: Path) -> dict[str, Entry]:
    return {e.path: e for e in iter_initramfs(initrd)}


def use_archive(recipe: Path, archive: str) -> None:
    recipe.write_text(recipe.read_text().replace('source = "overlay"', f'source = "{archive}"'))


def site_tree(root: Path) -> Path:
    """An overlay with the kinds of member an archive keeps: modes, symlinks, a hard link."""
    tree = root / "tree"
    (tree / "opt").mkdir(parents=True)
    (tree / "usr/local/etc").mkdir(parents=True)
    (tree / "srv/private").mkdir(parents=True)
    (tree / "srv/private").chmod(0o700)
    (tree / "opt/bootlocal.sh").write_text("#!/bin/sh\necho from the archive\n")
    (tree / "opt/bootlocal.sh").chmod(0o750)
    (tree / "opt/tool").write_bytes(b"\x7fELF stand-in\n")
    (tree / "opt/tool").chmod(0o4755)
    os.link(tree / "opt/tool", tree / "opt/tool-again")
    (tree / "opt/latest").symlink_to("tool")
    (tree / "opt/shell").symlink_to("/bin/sh")
    (tree / "usr/local/etc/site.conf.j2").write_text("server {{ nfs_server }}\n")
    (tree / "usr/local/etc/site.conf.j2").chmod(0o640)
    return tree


@pytest.mark.parametrize("suffix", list(SUFFIXES))
def test_an_archive_keeps_modes_links_and_renders_templates(
    tmp_path: Path, mirror: MirrorServer, suffix: str
) -> None:
    archive = bsdtar(tmp_path / f"site.{suffix}", site_tree(tmp_path), *SUFFIXES[suffix])
    recipe = recipe_file(tmp_path, mirror.url)
    use_archive(recipe, f"site.{suffix}")
    result = run_build(tmp_path, recipe)
    got = image(result.initrd)

    def kind_mode(path: str) -> tuple[int, int]:
        return stat.S_IFMT(got[path].mode), stat.S_IMODE(got[path].mode)

    assert kind_mode("opt/bootlocal.sh") == (stat.S_IFREG, 0o750)
    assert kind_mode("opt/tool") == (stat.S_IFREG, 0o4755)
    assert kind_mode("srv/private") == (stat.S_IFDIR, 0o700)
    assert kind_mode("usr/local/etc/site.conf") == (stat.S_IFREG, 0o640)
    assert got["usr/local/etc/site.conf"].data == b"server 10.1.1.1\n"
    assert "usr/local/etc/site.conf.j2" not in got
    assert (got["opt/latest"].data, got["opt/shell"].data) == (b"tool", b"/bin/sh")
    for path in ("opt/bootlocal.sh", "opt/tool", "opt/latest", "srv", "srv/private",
                 "usr/local/etc/site.conf"):
        assert (got[path].uid, got[path].gid) == (0, 0), path  # not the archive's 1234
    tool, again = got["opt/tool"], got["opt/tool-again"]
    if suffix == "zip":  # zip has no hard links: bsdtar stores the file twice
        assert tool.data == again.data == b"\x7fELF stand-in\n" and tool.nlink == 1
    else:
        assert tool.ino == again.ino and tool.nlink == again.nlink == 2
        assert (tool.data or b"") + (again.data or b"") == b"\x7fELF stand-in\n"

    # The same, as bsdtar lists the archive and the image.
    source = bsdtar_listing(archive)
    listed = bsdtar_listing(cpio_segments(result.initrd))
    for path in ("opt/bootlocal.sh", "opt/tool", "opt/tool-again", "srv/private", "opt/latest",
                 "opt/shell"):
        assert listed[path][0][1:] == source[path][0][1:], path  # permissions: rwsr-xr-x
        assert listed[path][2:4] == ["0", "0"] and source[path][2:4] == ["1234", "1234"]
    for path in ("opt/latest", "opt/shell"):
        assert listed[path][-1] == source[path][-1]  # the symlink's target
    if suffix != "zip":
        assert listed["opt/tool"][1] == listed["opt/tool-again"][1] == "2"  # the link count


def test_the_example_as_a_tar_gz_builds_the_image_of_its_directory(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    """Byte-identical when no template reads the build id (it digests the archive's bytes)."""
    recipe = recipe_file(tmp_path, mirror.url)
    from_tree = run_build(tmp_path, recipe, out="tree")
    bsdtar(tmp_path / "overlay.tar.gz", tmp_path / "overlay")
    use_archive(recipe, "overlay.tar.gz")
    from_archive = run_build(tmp_path, recipe, out="archive")
    assert from_archive.build_id != from_tree.build_id
    assert from_archive.initrd.read_bytes() == from_tree.initrd.read_bytes()


def test_the_shipped_example_overlay_as_a_tar_gz(site: Path) -> None:
    """The example's own overlay: every entry the same but the build id its bootlocal.sh says."""
    tmp_path = site  # the site fixture's copy of the example lives in the test's tmp_path
    path = site / "recipes/gameserver.toml"
    from_tree = run_build(tmp_path, path, out="tree")
    bsdtar(tmp_path / "overlays/gameserver.tar.gz", tmp_path / "overlays/gameserver")
    path.write_text(path.read_text().replace('"../overlays/gameserver"',
                                             '"../overlays/gameserver.tar.gz"'))
    from_archive = run_build(tmp_path, path, out="archive")
    a, b = image(from_tree.initrd), image(from_archive.initrd)
    assert list(a) == list(b)
    bootlocal = "opt/bootlocal.sh"
    for name in a:
        if name != bootlocal:
            assert a[name] == b[name], name
    short = (from_tree.build_id[:12].encode(), from_archive.build_id[:12].encode())
    assert (a[bootlocal].data or b"").replace(*short) == b[bootlocal].data
    assert a[bootlocal].mode == b[bootlocal].mode == stat.S_IFREG | 0o775  # [files] applied
    assert (b[bootlocal].uid, b[bootlocal].gid) == (0, 50)  # root:staff, from [files]


def test_an_archive_edit_rebuilds(tmp_path: Path, mirror: MirrorServer) -> None:
    recipe = recipe_file(tmp_path, mirror.url)
    archive = bsdtar(tmp_path / "overlay.tar", tmp_path / "overlay")
    use_archive(recipe, "overlay.tar")
    first = run_build(tmp_path, recipe)
    assert run_build(tmp_path, recipe).up_to_date
    (tmp_path / "overlay/opt/bootlocal.sh").write_text("#!/bin/sh\necho edited\n")
    archive.unlink()
    bsdtar(archive, tmp_path / "overlay")
    second = run_build(tmp_path, recipe)
    assert not second.up_to_date and second.build_id != first.build_id
    assert image(second.initrd)["opt/bootlocal.sh"].data == b"#!/bin/sh\necho edited\n"


def test_files_table_sets_owner_and_mode_of_every_name_of_a_hard_link(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    bsdtar(tmp_path / "site.tar.xz", site_tree(tmp_path))
    recipe = recipe_file(tmp_path, mirror.url, body='[files."/opt/tool"]\nmode = "0700"\n'
                         'owner = "tc"\ngroup = "staff"\n')
    use_archive(recipe, "site.tar.xz")
    got = image(run_build(tmp_path, recipe).initrd)
    for name in ("opt/tool", "opt/tool-again"):
        assert (stat.S_IMODE(got[name].mode), got[name].uid, got[name].gid) == (
            0o700, 1001, 50), name


def test_append_mode_refuses_an_archive_hard_link(tmp_path: Path, mirror: MirrorServer) -> None:
    bsdtar(tmp_path / "site.tar", site_tree(tmp_path))
    recipe = recipe_file(tmp_path, mirror.url, body='[image]\noutput = "append"\n')
    use_archive(recipe, "site.tar")
    with pytest.raises(InputError, match=r"^\S+/site\.tar:opt/tool(-again)?: a hard link; "
                       r"append mode cannot keep an overlay's hard links \(use output = "
                       r"\"repack\"\)$"):
        run_build(tmp_path, recipe)
    assert not (tmp_path / "out").exists()


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


FILE = (_member("opt/ok"), b"ok\n")
BAD = {
    "absolute": ([(_member("/etc/passwd"), b"x\n")], r"'/etc/passwd' is an absolute path "
                 r"\(members are relative to the image root\)"),
    "dot-dot": ([(_member("opt/../../x"), b"x\n")], r"'opt/\.\./\.\./x' climbs out of the image "
                r"root \('\.\.'\)"),
    "device": ([(_member("dev/sda", tarfile.BLKTYPE), b"")], r"dev/sda: only files, "
               r"directories, hard links and symlinks can be overlaid .*"),
    "fifo": ([(_member("opt/pipe", tarfile.FIFOTYPE), b"")], r"opt/pipe: only files, .*"),
    "symlink out": ([(_member("opt/up", tarfile.SYMTYPE, "../../etc/shadow"), b"")],
                    r"opt/up: symlink target '\.\./\.\./etc/shadow' escapes the image root"),
    "hard link out": ([FILE, (_member("opt/pw", tarfile.LNKTYPE, "/etc/passwd"), b"")],
                      r"opt/pw: hard link to '/etc/passwd', which is not an earlier file of "
                      r"the archive"),
    "hard link up": ([FILE, (_member("opt/pw", tarfile.LNKTYPE, "../etc/passwd"), b"")],
                     r"opt/pw: hard link to '\.\./etc/passwd', which is not an earlier file .*"),
    "hard link ahead": ([(_member("opt/a", tarfile.LNKTYPE, "opt/b"), b""),
                         (_member("opt/b"), b"b\n")], r"opt/a: hard link to 'opt/b', which .*"),
    "twice": ([FILE, FILE], r"opt/ok: appears twice in the archive"),
    "template hard link": ([(_member("opt/a.j2"), b"{{ nfs_server }}\n"),
                            (_member("opt/b", tarfile.LNKTYPE, "opt/a.j2"), b"")],
                           r"opt/b: a template cannot be hard-linked"),
    "control character": ([(_member("opt/a\nb"), b"x\n")], r"the member name \"opt/a\\nb\" "
                          r"holds a control character"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_archive_is_one_line_and_nothing_written(
    tmp_path: Path, mirror: MirrorServer, case: str
) -> None:
    entries, message = BAD[case]
    archive = _tar(tmp_path / "bad.tar", *entries)
    listing = subprocess.run(["bsdtar", "-tvf", str(archive)], capture_output=True, text=True)
    assert len(listing.stdout.splitlines()) == len(entries)  # bsdtar reads what we refuse
    recipe = recipe_file(tmp_path, mirror.url)
    use_archive(recipe, "bad.tar")
    result = subprocess.run([sys.executable, "-m", "tcbuild", "build", str(recipe), "--cache",
                             str(tmp_path / "c"), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"{archive}"), line
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("name", "data", "message"), [
    ("bad.tar.gz", b"\x1f\x8b\x08\x00not really gzip", r"not a readable \.tar\.gz archive"),
    ("bad.zip", b"plain text, no zip", r"not a readable \.zip archive"),
    ("bad.cpio", b"070707 old binary? no", r"not a readable \.cpio archive"),
    ("bad.tar", b"", r"not a readable \.tar archive"),
])
def test_an_unreadable_archive_names_itself(
    tmp_path: Path, mirror: MirrorServer, name: str, data: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(data)
    recipe = recipe_file(tmp_path, mirror.url)
    use_archive(recipe, name)
    with pytest.raises(InputError, match=rf"^{tmp_path / name}: {message} \(.+\)$"):
        run_build(tmp_path, recipe)


def test_a_member_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "latin.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("opt/caf\xe9")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    with pytest.raises(InputError) as info_:
        read_overlay(archive, {}, 0)
    assert str(info_.value) == f"{archive}: a member name is not UTF-8 text (b'opt/caf\\xe9')"


def test_a_truncated_archive_is_refused(tmp_path: Path, mirror: MirrorServer) -> None:
    archive = bsdtar(tmp_path / "site.tar.xz", site_tree(tmp_path))
    archive.write_bytes(archive.read_bytes()[:-40])
    recipe = recipe_file(tmp_path, mirror.url)
    use_archive(recipe, "site.tar.xz")
    with pytest.raises(InputError, match=r"site\.tar\.xz: not a readable \.tar\.xz archive"):
        run_build(tmp_path, recipe)


def test_a_recipe_names_a_missing_archive_or_a_directory_named_like_one(tmp_path: Path) -> None:
    (tmp_path / "dir.tar").mkdir()
    path = tmp_path / "r.toml"
    path.write_text('[tinycore]\nrelease = "15.x"\n[[overlay]]\nsource = "gone.tar.gz"\n'
                    '[[overlay]]\nsource = "dir.tar"\n')
    with pytest.raises(InputError) as info:
        load_recipe(path)
    assert [line.split(": ", 2)[1:] for line in str(info.value).splitlines()] == [
        ["overlay[0].source", f"file 'gone.tar.gz' does not exist (looked for "
                              f"{tmp_path / 'gone.tar.gz'})"],
        ["overlay[1].source", f"file 'dir.tar' is not a file (looked for {tmp_path / 'dir.tar'})"],
    ]


def test_import_tcbuild_does_not_load_libarchive() -> None:
    code = "import sys, tcbuild; assert 'libarchive' not in sys.modules, 'loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The site tree in every overlay format, made once by bsdtar."""
    root = tmp_path_factory.mktemp("archives")
    tree = site_tree(root)
    return {suffix: bsdtar(root / f"site.{suffix}", tree, *SUFFIXES[suffix]).read_bytes()
            for suffix in SUFFIXES}


def test_damaged_archives_raise_only_tcbuild_errors(archives: dict[str, bytes]) -> None:
    """Flipped bytes and cuts anywhere in each format: a result or one InputError, never more."""
    fuzz = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

    @fuzz
    @given(st.sampled_from(sorted(archives)), st.lists(st.tuples(
        st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
        st.floats(0.05, 1))
    def damaged(suffix: str, flips: list[tuple[float, int]], keep: float) -> None:
        data = bytearray(archives[suffix])
        for at, mask in flips:
            data[int(at * len(data))] ^= mask
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"x.{suffix}"
            path.write_bytes(bytes(data[: max(1, int(keep * len(data)))]))
            try:
                for item in read_overlay(path, {"nfs_server": "10.1.1.1"}, 0):
                    assert item.entry.size == len(item.entry.data or b"")
            except InputError as e:
                assert len(str(e).splitlines()) == 1, str(e)

    damaged()


def test_append_mode_takes_an_archive_without_hard_links(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    recipe = recipe_file(tmp_path, mirror.url)
    bsdtar(tmp_path / "overlay.zip", tmp_path / "overlay")
    use_archive(recipe, "overlay.zip")
    repacked = image(run_build(tmp_path, recipe, out="repack").initrd)
    recipe.write_text(recipe.read_text() + '\n[image]\noutput = "append"\n')
    appended = image(run_build(tmp_path, recipe, out="append").initrd)
    for path in ("opt/bootlocal.sh", "usr/local/etc/site.conf"):
        a, b = appended[path], repacked[path]
        assert (a.mode, a.uid, a.gid, a.mtime, a.data) == (b.mode, b.uid, b.gid, b.mtime, b.data)
    assert appended["usr/local/etc/site.conf"].data == b"server 10.1.1.1\n"


def test_an_archive_without_directory_entries_makes_their_parents(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    """`tar czf site.tar.gz opt/site/run.sh` names no directory: the image has them, 0755
    root:root like a directory overlay's, and an existing one keeps its own mode and owner."""
    require_tool("tar", "tar")
    tree = tmp_path / "tree"
    (tree / "opt/site").mkdir(parents=True)
    (tree / "srv/www/site").mkdir(parents=True)
    (tree / "opt/site/run.sh").write_text("#!/bin/sh\necho site\n")
    (tree / "opt/site/run.sh").chmod(0o755)
    (tree / "srv/www/site/index.html").write_text("<p>site</p>\n")
    subprocess.run(["tar", "czf", str(tmp_path / "site.tar.gz"), "-C", str(tree),
                    "opt/site/run.sh", "srv/www/site/index.html"], check=True)
    listed = subprocess.run(["tar", "tzf", str(tmp_path / "site.tar.gz")], check=True,
                            capture_output=True, text=True).stdout.split()
    assert listed == ["opt/site/run.sh", "srv/www/site/index.html"]  # no directory entry
    recipe = recipe_file(tmp_path, mirror.url)
    base = image(run_build(tmp_path, recipe, out="base").initrd)
    use_archive(recipe, "site.tar.gz")
    got = image(run_build(tmp_path, recipe).initrd)
    for path in ("opt/site", "srv", "srv/www", "srv/www/site"):
        assert got[path].mode == stat.S_IFDIR | 0o755, path
        assert (got[path].uid, got[path].gid) == (0, 0), path
    assert got["opt"] == base["opt"]  # the base's directory, as it was
    assert got["opt/site/run.sh"].data == b"#!/bin/sh\necho site\n"
    assert got["opt/site/run.sh"].mode == stat.S_IFREG | 0o755
    assert got["srv/www/site/index.html"].mode == stat.S_IFREG | 0o644
