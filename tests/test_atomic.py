"""The one durable write: fsync of the file and of its directory, for build outputs, the cache,
ISO images and the TFTP root; temp files of killed writers swept, live ones left alone."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcbuild.atomic import SUFFIX, publish_files, sweep, write_bytes, write_file
from tcbuild.sources.cache import Cache

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """The directories fsynced meanwhile (the real fsync still runs)."""
    seen: list[Path] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            seen.append(Path(f"/proc/self/fd/{fd}").readlink())
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield seen


def test_build_outputs_cache_and_single_files_fsync_their_directory(
    tmp_path: Path, synced: list[Path]
) -> None:
    out = tmp_path / "out"
    publish_files(out, {"vmlinuz64": b"k", "core.gz": [b"a", b"b"], "build.json": b"{}"})
    assert (out / "core.gz").read_bytes() == b"ab" and synced == [out]
    synced.clear()
    cache = Cache(tmp_path / "cache")
    obj = cache.store_bytes("15.x/a.tcz", b"abc", "http://m/a.tcz")
    assert obj.path.parent in synced and tmp_path / "cache/refs/15.x" in synced
    synced.clear()
    write_file(tmp_path / "x.iso", lambda f: f.write(b"iso"))
    write_bytes(tmp_path / "tftp/pxelinux.0", b"boot", 0o644)
    assert synced == [tmp_path, tmp_path / "tftp"]


def test_temp_files_of_killed_writers_are_swept_live_ones_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".core.gz.k1ll3d{SUFFIX}"  # left by kill -9: nobody holds its lock
    stale.write_bytes(b"half an image")
    live = out / f".vmlinuz64.runn1ng{SUFFIX}"
    live.write_bytes(b"")
    mine = [out / ".core.gz.kept", out / "notes.txt"]  # not temp files of tcbuild's
    for path in mine:
        path.write_text("the user's\n")
    with live.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a writer in another process holds it
        publish_files(out, {"core.gz": b"new", "vmlinuz64": b"k"})
        assert not stale.exists() and live.exists()
    assert sweep(out) == 1 and not live.exists()
    assert all(path.read_text() == "the user's\n" for path in mine)
    assert sorted(p.name for p in out.iterdir()) == [".core.gz.kept", "core.gz", "notes.txt",
                                                     "vmlinuz64"]


def test_a_failed_write_leaves_the_target_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.iso"
    target.write_bytes(b"the old image")

    def fail(f: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_file(target, fail)
    assert [p.name for p in tmp_path.iterdir()] == ["x.iso"]
    assert target.read_bytes() == b"the old image"


def test_write_all_of_more_files_than_the_open_files_limit(tmp_path: Path) -> None:
    """A fleet's per-MAC configs (two files a host and the histories): a temp file held open
    each until the renames failed with EMFILE past the limit on open files (this machine's
    hard limit is 20,000: 10,000 hosts with per-MAC configs); written files are closed now,
    so 3,000 fit in a hard limit of 256. Dead temp files are swept as before."""
    (tmp_path / f".c0.x{SUFFIX}").write_bytes(b"left by a killed writer")
    script = f"""
import resource, sys
from pathlib import Path
from tcbuild.atomic import write_all
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
root = Path({str(tmp_path)!r})
write_all([(root / f"c{{i}}", f"{{i}}\\n".encode()) for i in range(3000)])
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"c{i}" for i in range(3000))
    assert all((tmp_path / f"c{i}").read_text() == f"{i}\n" for i in (0, 1499, 2999))


def test_sweep_leaves_a_directory_alone_while_a_row_is_written_into_it(tmp_path: Path) -> None:
    """`write_all` closes the temp files it has written and holds their directory locked
    shared: a sweep meanwhile (another writer's) removes nothing there."""
    dead = tmp_path / f".c1.x{SUFFIX}"
    dead.write_bytes(b"a row's temp file, closed, not yet renamed")
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(directory, fcntl.LOCK_SH)
        assert sweep(tmp_path) == 0 and dead.exists()
    finally:
        os.close(directory)
    assert sweep(tmp_path) == 1 and not dead.exists()
