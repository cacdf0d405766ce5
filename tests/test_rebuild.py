"""Incremental builds: the cache keeps each compressed run, a rebuild compresses only the runs
that changed and gives, byte for byte, what a cold build from an empty cache gives."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest

from tcbuild import load_recipe
from tcbuild.formats.newc import Entry, iter_initramfs
from tcbuild.image import compose as image
from tcbuild.image import runs
from tcbuild.image import store as image_store
from tcbuild.image.overlay import overlay_digest
from tcbuild.image.store import Damaged, Store, Writer
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions, BuildResult, build

from .conftest import tmpfs
from .kit.mirrortree import MirrorServer
from .test_image import ROOT, members, recipe_file


@pytest.fixture
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of a few entries, so that the small test image is cut into many."""
    monkeypatch.setattr(runs, "MIN_RUN", 64)
    monkeypatch.setattr(runs, "MAX_RUN", 4096)
    monkeypatch.setattr(runs, "CUT_EVERY", 2)


def built(recipe: Path, out: Path, cache: Path, **kw: object) -> BuildResult:
    options = BuildOptions(out_dir=out, fetch=FetchOptions(cache_dir=cache), **kw)  # type: ignore[arg-type]
    return build(load_recipe(recipe), options)


def same_as_cold(tmp_path: Path, recipe: Path, warm: BuildResult, name: str, shipped: int
                 ) -> None:
    """A cold build of the same recipe in an empty cache gives the same bytes."""
    cold = built(recipe, tmp_path / f"cold-{name}", tmp_path / f"cache-{name}")
    assert cold.compressed == len(members(cold.initrd)) - shipped
    assert warm.initrd.read_bytes() == cold.initrd.read_bytes()
    assert (warm.out_dir / "build.json").read_bytes() == (cold.out_dir / "build.json").read_bytes()


SHIPPED = {"repack": 0, "append": 2}  # the base's members, as the mirror ships them


def reinstalled(tmp_path: Path, recipe: Path, cache: Path, old: str, new: str, output: str
                ) -> BuildResult:
    """The recipe rebuilt with another extension list: at most half its runs compressed, the
    bytes of a cold build."""
    recipe.write_text(recipe.read_text().replace(f"install = [{old}]", f"install = [{new}]"))
    rebuilt = built(recipe, tmp_path / "out", cache)
    count = len(members(rebuilt.initrd)) - SHIPPED[output]
    assert 1 <= rebuilt.compressed <= count // 2, (rebuilt.compressed, count)
    same_as_cold(tmp_path, recipe, rebuilt, "reinstalled", SHIPPED[output])
    return rebuilt


@pytest.mark.parametrize("output", ["repack", "append"])
def test_a_rebuild_compresses_only_what_changed_and_gives_the_cold_bytes(
    tmp_path: Path, mirror: MirrorServer, small_runs: None, output: str
) -> None:
    recipe = recipe_file(tmp_path, mirror.url, f'[image]\noutput = "{output}"\n',
                         install='"dhcp"')
    cache = tmp_path / "c"
    first = built(recipe, tmp_path / "out", cache)
    shipped = SHIPPED[output]
    total = len(members(first.initrd)) - shipped
    assert total >= 4 and first.compressed == total
    again = built(recipe, tmp_path / "out", cache, force=True)
    assert again.compressed == 0 and again.initrd.read_bytes() == first.initrd.read_bytes()

    (tmp_path / "overlay/opt/bootlocal.sh").write_text("#!/bin/sh\necho changed\n")
    edited = built(recipe, tmp_path / "out", cache)
    assert 1 <= edited.compressed <= 2, edited.compressed  # the edited file's run, a neighbour
    same_as_cold(tmp_path, recipe, edited, "edited", shipped)

    reinstalled(tmp_path, recipe, cache, '"dhcp"', '"dhcp", "libtirpc"', output)


@pytest.mark.parametrize("output", ["repack", "append"])
def test_removing_an_extension_compresses_only_the_runs_beside_it(
    tmp_path: Path, mirror: MirrorServer, small_runs: None, output: str
) -> None:
    recipe = recipe_file(tmp_path, mirror.url, f'[image]\noutput = "{output}"\n',
                         install='"dhcp", "libtirpc"')
    cache = tmp_path / "c"
    first = built(recipe, tmp_path / "out", cache)
    removed = reinstalled(tmp_path, recipe, cache, '"dhcp", "libtirpc"', '"dhcp"', output)
    assert removed.build_id != first.build_id


def test_a_damaged_run_in_the_cache_is_compressed_again(tmp_path: Path, mirror: MirrorServer,
                                                       small_runs: None) -> None:
    recipe = recipe_file(tmp_path, mirror.url)
    cache = tmp_path / "c"
    first = built(recipe, tmp_path / "out", cache)
    kept = [p for p in (cache / "derived").rglob("*")  # the members (not the indexes)
            if p.is_file() and p.read_bytes()[32:34] == b"\x1f\x8b"]
    assert len(kept) == first.compressed
    for path in kept:
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(data)
    again = built(recipe, tmp_path / "out", cache, force=True)
    assert again.compressed == first.compressed == len(members(first.initrd))
    assert again.initrd.read_bytes() == first.initrd.read_bytes()
    assert all(hashlib.sha256(p.read_bytes()[32:]).digest() == p.read_bytes()[:32] for p in kept)


def entry(name: str, size: int) -> Entry:
    return Entry(name, stat.S_IFREG | 0o644, 0, 0, 1, 0, size, 0, (0, 0), b"x" * size)


def test_runs_are_cut_where_the_entries_say(small_runs: None) -> None:
    """An inserted or removed entry moves at most the cuts next to it."""
    entries = [entry(f"usr/share/file{i:04}", 40 + i % 97) for i in range(600)]
    cuts = [[i.entry.name for i in run] for run in runs.split(items(entries))]
    assert len(cuts) > 30 and all(sum(len(n) for n in run) for run in cuts)
    assert all(len(run) == 1 or sum(e.size for e in entries if e.name in run) <= 4096
               for run in cuts)
    for changed in ([*entries[:300], entry("usr/share/new", 900), *entries[300:]],
                    entries[:300] + entries[301:],
                    [*entries[:300], entry(entries[300].name, 2000), *entries[301:]]):
        after = [[i.entry.name for i in run] for run in runs.split(items(changed))]
        kept = [run for run in after if run in cuts]
        assert len(after) - len(kept) <= 2 and len(cuts) - len(kept) <= 2, (cuts, after)


def items(entries: list[Entry]) -> list[image.Item]:
    return [image.Item(e, image.BASE) for e in entries]


def test_a_tree_keeps_no_data_and_loads_what_a_run_needs(tmp_path: Path) -> None:
    """The base's data goes to the cache's data file as it is read; archives load it back."""
    base = [Entry(".", stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0, (0, 0), None),
            entry("empty", 0),
            Entry("link", stat.S_IFLNK | 0o777, 0, 0, 1, 0, 3, 0, (0, 0), b"one"),
            entry("one", 5), entry("two", 5)]  # two: the same content
    with (tmp_path / "data").open("wb") as f:
        writer = Writer(f)
        tree = image.read_base([base], writer.add)
    assert all(item.entry.data is None for p, item in tree.items.items() if p != "link")
    assert len(writer.table) == 1 and (tmp_path / "data").read_bytes() == b"xxxxx"
    with Store() as store:
        store.add(tmp_path / "data", writer.table)
        tree.load = store.read
        cut = runs.repack(tree)
        archive = runs.archive(image.with_data(tree, item) for run in cut for item in run)
        assert archive == runs.archive(base)
        (tmp_path / "data").write_bytes(b"xxxxy")
        with pytest.raises(Damaged, match=r"/data: damaged at 0 "):
            image.with_data(tree, tree.items["one"])


def data_files(cache: Path) -> list[Path]:
    """The inputs' data files: derived data without a checksum of the whole (`store.py`)."""
    return [p for p in (cache / "derived").rglob("*") if p.is_file()
            and hashlib.sha256(p.read_bytes()[32:]).digest() != p.read_bytes()[:32]]


def test_a_damaged_data_file_is_made_again_from_the_inputs(tmp_path: Path,
                                                            mirror: MirrorServer) -> None:
    recipe = recipe_file(tmp_path, mirror.url)
    cache = tmp_path / "c"
    first = built(recipe, tmp_path / "out", cache)
    kept = {path: path.read_bytes() for path in data_files(cache)}
    assert len(kept) >= 4  # the base's, and each unpacked extension's (dhcp, nfs-utils, ...)
    (tmp_path / "overlay/opt/bootlocal.sh").write_text("#!/bin/sh\necho changed\n")
    for path, data in kept.items():  # the edited file's run needs the base's data, at least
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    edited = built(recipe, tmp_path / "out", cache)
    assert edited.build_id != first.build_id
    same_as_cold(tmp_path, recipe, edited, "edited", 0)
    assert {path: path.read_bytes() for path in data_files(cache)} == kept  # made again


def test_a_cache_without_room_for_the_data_still_builds(tmp_path: Path, mirror: MirrorServer
                                                       ) -> None:
    """The cache takes the downloads but not the inputs' data: the build keeps it in memory."""
    recipe = recipe_file(tmp_path, mirror.url)
    roomy = built(recipe, tmp_path / "roomy", tmp_path / "c")
    downloads = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*")
                    if p.is_file() and "derived" not in p.parts)
    with tmpfs(tmp_path / "small", f"size={downloads + (256 << 10)}",
               "mounting a small tmpfs") as small:
        for part in ("objects", "refs", "notes"):
            shutil.copytree(tmp_path / "c" / part, small / part)
        tight = built(recipe, tmp_path / "tight", small)
        base = max(data_files(tmp_path / "c"), key=lambda p: p.stat().st_size)
        assert base.stat().st_size > 256 << 10
        assert not (small / "derived" / base.parent.name / base.name).exists()  # did not fit
        assert tight.initrd.read_bytes() == roomy.initrd.read_bytes()
        assert not list((small / "tmp").iterdir())  # nothing half-written left


def test_a_rebuild_renders_only_the_templates_that_changed(tmp_path: Path,
                                                           mirror: MirrorServer) -> None:
    """Rendered templates are kept: a rebuild with the same text and values loads no Jinja2;
    a changed value is rendered anew, and a damaged copy is never used."""
    recipe = recipe_file(tmp_path, mirror.url)
    cache = tmp_path / "c"
    first = built(recipe, tmp_path / "out", cache)
    rebuild = ("import sys; from pathlib import Path; from tcbuild import *; "
               f"build(load_recipe(Path({str(recipe)!r})), BuildOptions(force=True, "
               f"out_dir=Path({str(tmp_path / 'again')!r}), "
               f"fetch=FetchOptions(cache_dir=Path({str(cache)!r})))); "
               "print('jinja2' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", rebuild], capture_output=True, text=True,
                            check=True).stdout
    assert loaded == "False\n"
    assert (tmp_path / "again/core.hts.gz").read_bytes() == first.initrd.read_bytes()
    for path in (cache / "derived").rglob("*"):  # every kept rendering (and all else) damaged
        if path.is_file():
            path.write_bytes(path.read_bytes()[:-1] + b"!")
    recipe.write_text(recipe.read_text().replace('nfs_server = "10.1.1.1"',
                                                 'nfs_server = "10.1.1.2"'))
    changed = built(recipe, tmp_path / "out", cache)
    conf = {e.path: e.data for e in iter_initramfs(changed.initrd)}["usr/local/etc/site.conf"]
    assert conf == b"server 10.1.1.2\n"
    same_as_cold(tmp_path, recipe, changed, "changed", 0)


def test_two_builds_at_once_share_a_cold_cache(tmp_path: Path, mirror: MirrorServer) -> None:
    """Both read the inputs and write their data files and members at the same time: each
    gets whole files (renamed into place), and both give the bytes a later build gives."""
    recipe = recipe_file(tmp_path, mirror.url)
    cache = tmp_path / "c"
    command = [sys.executable, "-m", "tcbuild", "build", str(recipe), "--cache", str(cache), "-q"]
    procs = [subprocess.Popen([*command, "--out", str(tmp_path / f"out{i}")],
                              stderr=subprocess.PIPE) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    later = built(recipe, tmp_path / "later", cache, force=True)
    assert later.compressed == 0  # everything the two kept is whole and used
    for i in range(2):
        assert (tmp_path / f"out{i}/core.hts.gz").read_bytes() == later.initrd.read_bytes()


DIGEST_AS = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tcbuild.image.overlay import overlay_digest
print(overlay_digest(Path(sys.argv[2])))
"""


def test_an_overlay_digest_takes_exec_bits_from_the_mode_for_every_user() -> None:
    """The image's file is 0755 when any x bit is set, whoever builds: so is the digest (the
    build id). `chmod 0654` by a user who owns the file must change it, as it changes the image."""
    with tempfile.TemporaryDirectory(prefix="tcbuild-digest-") as name:
        tree = Path(name)
        tree.chmod(0o755)
        script = tree / "run.sh"
        script.write_text("#!/bin/sh\necho run\n")
        users = [None] + ([65534] if os.geteuid() == 0 else [])  # and nobody, who owns it

        def digests(mode: int) -> list[str]:
            script.chmod(mode)
            found = []
            for uid in users:
                if uid is None:
                    found.append(overlay_digest(tree))
                    continue
                os.chown(tree, uid, uid)
                os.chown(script, uid, uid)
                found.append(subprocess.run(
                    ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                     sys.executable, "-c", DIGEST_AS, str(ROOT), str(tree)],
                    check=True, capture_output=True, text=True).stdout.strip())
            return found

        plain, executable = digests(0o644), digests(0o755)
        assert len(set(plain)) == len(set(executable)) == 1  # every user sees the same
        assert plain != executable
        for mode in (0o654, 0o645, 0o744, 0o700):
            assert digests(mode) == executable, oct(mode)
        for mode in (0o600, 0o444, 0o664):
            assert digests(mode) == plain, oct(mode)


def golden_entries() -> list[Entry]:
    """A small fixed tree of every kind the writer writes: directories, files, a hard-link
    group (data on its last name), a symlink, a device node, a setuid mode, an empty file."""
    t = 1_700_000_000

    def entry(name: str, mode: int, data: bytes | None = None, nlink: int = 1, ino: int = 0,
              rdev: tuple[int, int] = (0, 0), uid: int = 0) -> Entry:
        return Entry(name, mode, uid, 50 if uid else 0, nlink, t, len(data or b""), ino, rdev,
                     data)

    return [
        entry(".", stat.S_IFDIR | 0o755, nlink=2),
        entry("bin", stat.S_IFDIR | 0o755, nlink=2),
        entry("bin/busybox", stat.S_IFREG | 0o4755, b"", nlink=2, ino=7),
        entry("bin/sh", stat.S_IFREG | 0o4755, b"\x7fELF busybox\n" * 3, nlink=2, ino=7),
        entry("dev", stat.S_IFDIR | 0o755, nlink=2),
        entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        entry("etc", stat.S_IFDIR | 0o755, nlink=2),
        entry("etc/empty", stat.S_IFREG | 0o644, b""),
        entry("etc/motd", stat.S_IFREG | 0o644, b"Tiny Core " * 40 + b"\n", uid=1001),
        entry("lib", stat.S_IFLNK | 0o777, b"usr/lib"),
    ]


# What the writer produced for `golden_entries`, and the FORMAT it was recorded with: change
# both together (the member digests hold for the libdeflate version named beside them).
GOLDEN_FORMAT = 2
GOLDEN_NEWC = "e1beaabf0a6c2932e22e5d61c9a837dc183b11fc6d53540d147c73563034c863"
GOLDEN_DEFLATE = "0.9.0"
GOLDEN_MEMBERS = {"small": "c135789a9be20007a2c6e376d9731597fec179b15ea8e5ff410feb65a9237a76",
                  "fast": "faa29c15eea6987da030281019d903bc237e521cab2be50c8d19fb5f6707ccaa"}


def test_the_writer_gives_the_recorded_bytes_for_the_format_number() -> None:
    """Every cache key and build id carries `FORMAT`: bytes the writer makes differently must
    come with a new number, or a build would take an older writer's members from the cache."""
    import deflate

    from tcbuild.formats.compress import Compression, gzip_member
    from tcbuild.version import FORMAT

    archive = runs.archive(golden_entries())
    newc = hashlib.sha256(archive).hexdigest()
    members = {c.value: gzip_member(archive, c) for c in Compression}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    recorded = (f"record GOLDEN_FORMAT = {FORMAT}, GOLDEN_NEWC = {newc!r}, GOLDEN_DEFLATE = "
                f"{deflate.__version__!r}, GOLDEN_MEMBERS = {digests!r}")
    assert FORMAT == GOLDEN_FORMAT, f"FORMAT changed: {recorded}"
    assert newc == GOLDEN_NEWC, f"the newc writer's bytes changed: bump FORMAT, then {recorded}"
    for name, data in members.items():
        assert zlib.decompress(bytes(data), 31) == archive
        assert data[:8] == b"\x1f\x8b\x08\x00\0\0\0\0"  # no name, no time in the header
        if deflate.__version__ == GOLDEN_DEFLATE:
            assert digests[name] == GOLDEN_MEMBERS[name], (
                f"the {name} gzip members changed: bump FORMAT, then {recorded}")


def test_a_new_format_number_rebuilds_and_reuses_nothing_kept(
    tmp_path: Path, mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an older writer kept is never taken: another `FORMAT` is another build id and other
    cache keys, so every member is compressed again."""
    import tcbuild.stages.build as stage

    recipe = recipe_file(tmp_path, mirror.url, install='"dhcp"')
    first = built(recipe, tmp_path / "out", tmp_path / "c")
    assert built(recipe, tmp_path / "out", tmp_path / "c").up_to_date
    monkeypatch.setattr(stage, "FORMAT", stage.FORMAT + 1)
    monkeypatch.setattr(image_store, "INDEX_FORMAT", f"tcbuild-index-{stage.FORMAT}")
    again = built(recipe, tmp_path / "out", tmp_path / "c")
    assert not again.up_to_date and again.build_id != first.build_id
    assert again.compressed == len(members(again.initrd)) == first.compressed
