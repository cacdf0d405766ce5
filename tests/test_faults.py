"""Faults mid-way: kill -9 during a download and a build, a full disk during a build and a
publish, and a reader of the TFTP tree during repeated publishes. Nothing half-written is ever
visible; the previous state stays intact.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tcbuild.atomic import SUFFIX
from tcbuild.boot.pxelinux import parse
from tcbuild.sources.cache import Cache
from tcbuild.tftproot import releases as pub

from .conftest import verified
from .kit.mirrortree import MirrorServer

ROOT = Path(__file__).resolve().parent.parent
X64 = "15.x/x86_64"


def tcbuild(site: Path, *args: str | Path, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=site,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


@pytest.mark.slow
def test_kill_9_during_downloads_never_leaves_an_unverified_file(
    site: Path, mirror: MirrorServer
) -> None:
    cache = site / "cache"
    mirror.fail(f"{X64}/release/distribution_files/corepure64.gz", "stall", seconds=30.0)
    rng = random.Random(3)
    for _ in range(24):
        proc = tcbuild(site, "fetch", site / "recipes/gameserver.toml", "--cache", cache, "-q")
        time.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for ref in (cache / "refs").rglob("*.json"):  # every ref names a verified object
            hit = Cache(cache).lookup(str(ref.relative_to(cache / "refs"))[: -len(".json")])
            if hit is not None and hasattr(hit, "sha256"):
                assert hashlib.sha256(hit.path.read_bytes()).hexdigest() == hit.sha256
        for obj in (cache / "objects").rglob("*"):  # and every object is what its name says
            if obj.is_file():
                assert hashlib.sha256(obj.read_bytes()).hexdigest() == obj.name
    assert Cache(cache).lookup(f"{X64}/release/distribution_files/corepure64.gz") is None
    mirror.clear_faults()
    done = tcbuild(site, "fetch", site / "recipes/gameserver.toml", "--cache", cache, "-q")
    assert done.wait(timeout=60) == 0
    assert list((cache / "tmp").iterdir()) == []  # leftovers of the killed runs swept


@pytest.mark.slow
def test_kill_9_during_a_build_leaves_the_old_or_the_new_outputs(site: Path) -> None:
    """Builds alternate between two overlays and are killed at random moments, half of them
    as soon as a build's temp file shows (the marker that it is writing its outputs). Every
    visible output is byte-identical to the old build's or the new one's, build.json always
    describes the files beside it, and the temp files the killed builds left are swept."""
    motd = site / "overlays/gameserver/etc/motd"
    motd.parent.mkdir(exist_ok=True)
    out = site / "out"

    def args(where: Path) -> tuple[str | Path, ...]:
        return ("build", site / "recipes/gameserver.toml", "--cache", site / "cache", "--out",
                where, "-q")

    refs: dict[str, dict[str, bytes]] = {}
    started = time.monotonic()
    for variant in ("a", "b"):  # the two outputs every trial must end at one of
        motd.write_text(f"variant {variant}\n")
        assert tcbuild(site, *args(site / variant)).wait(timeout=120) == 0
        refs[variant] = visible(site / variant)
    took = (time.monotonic() - started) / 2
    assert refs["a"]["core.hts.gz"] != refs["b"]["core.hts.gz"]
    shutil.copytree(site / "a", out)
    state: str | None = "a"
    rng = random.Random(5)
    marked = 0
    for trial in range(24):
        target = "b" if state == "a" else "a"
        motd.write_text(f"variant {target}\n")
        proc = tcbuild(site, *args(out))
        if trial % 2:
            while proc.poll() is None and not temps(out):  # killed the moment it writes:
                time.sleep(0.001)  # with cached members the write itself takes milliseconds
        else:
            time.sleep(rng.uniform(0.05, took))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        marked += bool(temps(out))
        now = visible(out)
        for name, data in now.items():
            assert data in (refs["a"][name], refs["b"][name]), (trial, name)
        if "build.json" in now:  # the manifest always describes the files there
            state = next((v for v, files in refs.items() if files == now), None)
            assert state is not None, trial
        else:  # killed between retiring the manifest and the renames
            state = None
    assert marked >= 6  # kills did land while builds wrote their outputs
    assert tcbuild(site, *args(out)).wait(timeout=120) == 0
    assert visible(out) == refs[target]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the leftovers swept


def visible(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if not p.name.startswith(".")}


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(SUFFIX)]


def test_disk_full_during_a_build_is_one_line_and_keeps_the_old_outputs(
    site: Path, tiny_disk: Path
) -> None:
    out = tiny_disk / "out"
    out.mkdir()
    (out / "core.hts.gz").write_bytes(b"the previous image\n")
    result = subprocess.run(
        [sys.executable, "-m", "tcbuild", "build", site / "recipes/gameserver.toml", "--cache",
         site / "cache", "--out", out], cwd=site, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.endswith("No space left on device\n")
    assert [p.name for p in out.iterdir()] == ["core.hts.gz"]
    assert (out / "core.hts.gz").read_bytes() == b"the previous image\n"


def test_disk_full_during_a_publish_keeps_the_tree_valid(site: Path, tiny_disk: Path) -> None:
    tftp = tiny_disk / "tftp"
    tftp.mkdir()
    for name in ("pxelinux.0", "ldlinux.c32"):
        shutil.copy(site / "bootloader" / name, tftp / name)
    (tftp / "pxelinux.cfg").mkdir()
    (tftp / "pxelinux.cfg/default").write_text("# the operator's old config\n")
    result = subprocess.run(
        [sys.executable, "-m", "tcbuild", "publish", site / "recipes/gameserver.toml", "--tftp",
         tftp, "--cache", site / "cache", "--bootloader-dir", site / "bootloader"],
        cwd=site, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.endswith("No space left on device\n")
    assert len(result.stderr.splitlines()) == 1
    assert (tftp / "pxelinux.cfg/default").read_text() == "# the operator's old config\n"
    releases = tftp / pub.RELEASES  # no partial release left behind (the undo may remove the
    assert not releases.exists() or not list(releases.iterdir())  # directory it made too)


def test_a_read_only_tftp_root_is_one_line_and_untouched(site: Path, tiny_disk: Path) -> None:
    tftp = tiny_disk / "tftp"
    tftp.mkdir()
    (tftp / "pxelinux.cfg").mkdir()
    (tftp / "pxelinux.cfg/default").write_text("# the operator's old config\n")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "tcbuild", "publish", site / "recipes/gameserver.toml", "--tftp",
         tftp, "--cache", site / "cache", "--bootloader-dir", site / "bootloader"],
        cwd=site, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{tftp}/tcbuild: Read-only file system"]
    assert sorted(str(p.relative_to(tftp)) for p in tftp.rglob("*")) == [
        "pxelinux.cfg", "pxelinux.cfg/default"]


@pytest.mark.slow
def test_a_reader_sees_only_complete_matching_files_during_publishes(site: Path) -> None:
    tftp = site / "tftp"
    args = ("publish", site / "recipes/gameserver.toml", "--tftp", tftp, "--cache",
            site / "cache", "--bootloader-dir", site / "bootloader", "--keep", "2", "-q")
    assert tcbuild(site, *args).wait(timeout=120) == 0
    verified(tftp)
    seen: list[str] = []
    problems: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                text = (tftp / "pxelinux.cfg/default").read_text()
                label = parse(text, "default").label("tinycore")
                release = tftp / label.kernel.rsplit("/", 1)[0]
                meta = pub.releases(tftp)
                files = {r.id: r.files for r in meta}
                rid = release.name
                for name in (label.kernel, label.initrd):
                    data = (tftp / name).read_bytes()
                    if hashlib.sha256(data).hexdigest() != files[rid][
                            name.rsplit("/", 1)[1]].sha256:
                        problems.append(f"{name}: content does not match")
                seen.append(rid)
            except Exception as e:  # any torn read is a failure of the publish
                problems.append(repr(e))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(6):
            (site / "overlays/gameserver/etc").mkdir(exist_ok=True)
            (site / "overlays/gameserver/etc/motd").write_text(f"publish {i}\n")
            assert tcbuild(site, *args).wait(timeout=120) == 0
            verified(tftp)  # every publish is verified
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert len(set(seen)) >= 3  # the reader really saw releases change under it
