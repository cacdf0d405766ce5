"""State files (build.json, release.json, cache refs, histories, the bootloader set): a damaged
one is one line naming the file and the key; rollback follows each config's history, whoever
published; prune keeps what a rollback needs; the bootloader files are checked as one set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcbuild import TcbuildError
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.config.lockfile import LockFile
from tcbuild.config.recipefile import load_recipe
from tcbuild.formats.manifest import FileRecord, Manifest
from tcbuild.sources.cache import Cache
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions
from tcbuild.stages.publish import publish
from tcbuild.tftproot import releases as pub
from tcbuild.tftproot import writing
from tcbuild.tftproot.state import (
    BOOTLOADER,
    History,
    Release,
    booting,
    history_path,
    read_bootsets,
    write_bootsets,
)

from .kit.mirrortree import MirrorServer

ROOT = Path(__file__).resolve().parent.parent


def tcbuild(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess[str], code: int, line: str) -> None:
    assert (result.returncode, result.stderr) == (code, line + "\n"), result.stderr
    assert "Traceback" not in result.stdout


def release(site: Path, checkout: Path | None = None, recipe: str = "recipes/gameserver.toml",
            motd: str | None = None, keep: int = 5, inventory: bool = False) -> str:
    """Publish `recipe` of a checkout (default: the site's) into site/tftp; its release id."""
    checkout = checkout or site
    if motd is not None:
        (checkout / "overlays/gameserver/etc").mkdir(parents=True, exist_ok=True)
        (checkout / "overlays/gameserver/etc/motd").write_text(motd)
    loaded = load_recipe(checkout / recipe)
    options = BuildOptions(out_dir=checkout / "build" / loaded.name,
                           fetch=FetchOptions(cache_dir=site / "cache", progress=False))
    plan = publish(loaded, site / "tftp", options,
                   load_inventory(checkout / "examples/cluster.toml") if inventory else None,
                   keep, site / "bootloader")
    assert pub.verify(site / "tftp") == []
    return plan.release_id


def test_inspect_of_a_foreign_build_json_is_one_line(site: Path, mirror: MirrorServer) -> None:
    out = site / "out"
    built = tcbuild("build", site / "recipes/gameserver.toml", "--cache", site / "cache",
                    "--out", out, "-q")
    assert built.returncode == 0, built.stderr
    manifest = json.loads((out / "build.json").read_text())
    (out / "build.json").write_text(json.dumps({"name": "another tool's build"}))
    one_line(tcbuild("inspect", out), 1, f"{out}/build.json: outputs: missing")
    manifest["outputs"]["initrd"]["size"] = "big"
    (out / "build.json").write_text(json.dumps(manifest))
    one_line(tcbuild("inspect", out), 1,
             f"{out}/build.json: outputs.initrd.size: not a whole number (got a string)")
    manifest["outputs"]["initrd"]["size"] = 1
    manifest["entries"][3] = ["not", "an", "entry"]
    (out / "build.json").write_text(json.dumps(manifest))
    one_line(tcbuild("inspect", out), 1,
             f"{out}/build.json: entries[3]: not a JSON object (got a list)")
    assert tcbuild("inspect", out / "core.hts.gz").returncode == 0  # the image alone still lists
    rebuilt = tcbuild("build", site / "recipes/gameserver.toml", "--cache", site / "cache",
                      "--out", out, "-q")  # a damaged build.json only means a rebuild
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert tcbuild("inspect", out).returncode == 0


def test_releases_and_verify_with_a_damaged_release_json(site: Path) -> None:
    rid = release(site)
    tftp = site / "tftp"
    meta = tftp / pub.RELEASES / rid / "release.json"
    data = json.loads(meta.read_text())
    data["files"]["vmlinuz64"] = {"sha256": 3}
    meta.write_text(json.dumps(data))
    line = f"{meta}: files.vmlinuz64.sha256: not a string (got a number)"
    one_line(tcbuild("releases", "--tftp", tftp), 1, line)
    checked = tcbuild("verify", "--tftp", tftp)
    assert checked.returncode == 1 and line in checked.stderr.splitlines()
    meta.write_text("[1, 2")
    one_line(tcbuild("releases", "--tftp", tftp), 1,
             f"{meta}: not a JSON file (Expecting ',' delimiter: line 1 column 6 (char 5))")
    del data["files"]["vmlinuz64"]
    meta.write_text(json.dumps(data))
    one_line(tcbuild("releases", "--tftp", tftp), 1,
             f"{meta}: kernel: 'vmlinuz64' has no checksum under files")
    one_line(tcbuild("rollback", "--tftp", tftp), 1,
             f"{meta}: kernel: 'vmlinuz64' has no checksum under files")


def test_a_malformed_cache_ref_is_one_line(site: Path) -> None:
    cache = site / "cache"
    recipe = site / "recipes/gameserver.toml"
    assert tcbuild("fetch", recipe, "--cache", cache, "-q").returncode == 0
    ref = cache / "refs/15.x/x86_64/tcz/dhcp.tcz.json"
    good = json.loads(ref.read_text())
    for damage, line in (
        ({**good, "sha256": None}, "sha256: not a string (got null)"),
        ({**good, "size": -1}, "size: must be at least 0 (got -1)"),
        ([good], "not a JSON object (got a list)"),
        ({k: v for k, v in good.items() if k != "source"}, "source: missing"),
    ):
        ref.write_text(json.dumps(damage))
        one_line(tcbuild("fetch", recipe, "--cache", cache, "--offline", "-q", cwd=site), 1,
                 f"{ref}: {line} (a damaged cache entry: delete it)")
    ref.unlink()
    assert tcbuild("fetch", recipe, "--cache", cache, "-q").returncode == 0


def test_rollback_follows_history_whoever_published(site: Path) -> None:
    """The same recipe published from two checkouts; rollback steps back one per call."""
    ci = site / "ci"
    for name in ("recipes", "overlays", "examples"):
        shutil.copytree(site / name, ci / name)
    first = release(site, motd="first\n")
    second = release(site, ci, motd="second\n")
    third = release(site, motd="third\n")
    tftp = site / "tftp"
    assert pub.current(tftp) == {third: {"default"}}
    for was, now in ((third, second), (second, first)):
        rolled = tcbuild("rollback", "--tftp", tftp)
        assert rolled.returncode == 0, rolled.stderr
        assert rolled.stdout == f"{tftp}: default now boots {now} (was {was})\n"
        assert pub.verify(tftp) == []
    one_line(tcbuild("rollback", "--tftp", tftp), 2,
             f"{tftp}: no release before {first} to roll back to")
    fourth = release(site, ci, motd="fourth\n")  # after a rollback, a publish steps forward again
    assert History.read(tftp, "default").booted == (first, fourth)
    done = pub.rollback(tftp)
    assert (done.was, done.now, done.configs) == (fourth, first, ("default",))


def test_prune_keeps_what_a_config_rolls_back_to(site: Path) -> None:
    """A canary group's own recipe, published from two checkouts: the release its config would
    roll back to survives publishes of the default recipe with --keep 1."""
    inventory = site / "examples/cluster.toml"
    inventory.write_text(inventory.read_text().replace(
        '[group.canary]                           # hosts that boot another kernel line\n'
        'append = "base norestore nodhcp cron console=tty0 console=ttyS0,115200 loglevel=7"',
        '[group.canary]\nrecipe = "../recipes/canary.toml"'))
    shutil.copy(site / "recipes/gameserver.toml", site / "recipes/canary.toml")
    ci = site / "ci"
    for name in ("recipes", "overlays", "examples"):
        shutil.copytree(site / name, ci / name)
    release(site, inventory=True, motd="default 1\n")
    canary1 = release(site, recipe="recipes/canary.toml", inventory=True, motd="canary 1\n")
    canary2 = release(site, ci, "recipes/canary.toml", inventory=True, motd="canary 2\n")
    for n in (2, 3):
        release(site, inventory=True, motd=f"default {n}\n", keep=1)
    tftp = site / "tftp"
    kept = {r.id for r in pub.releases(tftp)}
    assert {canary1, canary2} <= kept
    config = pub.configs(tftp)["01-52-54-00-12-34-57"]
    history = History.read(tftp, "01-52-54-00-12-34-57").upto(booting(config))
    assert history.booted[-2:] == (canary1, canary2) and history.back(kept) == canary1


def test_verify_reports_a_bootloader_file_of_another_set(site: Path) -> None:
    release(site)
    tftp = site / "tftp"
    (tftp / "ldlinux.c32").write_bytes(b"ldlinux.c32 of another syslinux\n")
    assert pub.verify(tftp) == [
        f"{tftp}/ldlinux.c32: not the ldlinux.c32 of the bootloader set installed with the "
        "others (recorded in tcbuild/bootloader.json)"]
    (site / "bootloader/pxelinux.0").write_bytes(b"pxelinux.0, next version\n")
    (site / "bootloader/ldlinux.c32").write_bytes(b"ldlinux.c32, next version\n")
    release(site, motd="with the new bootloader\n")  # the set replaced as a whole
    assert (tftp / "ldlinux.c32").read_bytes() == b"ldlinux.c32, next version\n"
    assert len(json.loads((tftp / "tcbuild/bootloader.json").read_text())["sets"]) == 1


def test_a_bootloader_switch_killed_midway_is_found_and_mended(site: Path) -> None:
    """The states a switch of the set leaves when killed: before any file is replaced the old
    set is whole (sound), after one rename the files are mixed (reported); the next install
    completes the new set."""
    release(site)
    tftp = site / "tftp"
    old = read_bootsets(tftp)[-1]
    newer = site / "bootloader-next"
    shutil.copytree(site / "bootloader", newer)
    for name in ("pxelinux.0", "ldlinux.c32"):
        (newer / name).write_bytes(f"{name}, next version\n".encode())
    new = {name: hashlib.sha256((newer / name).read_bytes()).hexdigest() for name in old}
    write_bootsets(tftp, [old, new], tftp.stat())  # what the switch records first
    assert pub.verify(tftp) == []
    shutil.copy(newer / "pxelinux.0", tftp / "pxelinux.0")  # one file renamed, then killed
    assert pub.verify(tftp) == [
        f"{tftp}/ldlinux.c32: not the ldlinux.c32 of the bootloader set installed with the "
        "others (recorded in tcbuild/bootloader.json)"]
    writing.install_bootloader(tftp, pub.find_bootloader(newer), tftp.stat())
    assert pub.verify(tftp) == [] and read_bootsets(tftp) == [new]


# -- fuzz: every reader gives a value or one line naming its file --------------------------------

SHA = "ab" * 32
SEEDS: dict[str, object] = {
    "build.json": json.loads(Manifest(
        "0.1.0", SHA, "r.toml", "r", "6.6.8", {"release": "15.x"},
        (FileRecord("a.tcz", SHA, 3),), FileRecord("vmlinuz64", SHA, 1),
        FileRecord("core.gz", SHA, 2), ("x: y",),
        ({"path": "etc", "type": "dir", "mode": "0755", "uid": 0, "gid": 0, "mtime": 5,
          "origin": "base"},)).text()),
    "release.json": {"id": "rel", "recipe": "/r.toml", "name": "r", "build_id": SHA,
                     "time": "2027-01-15T08:00:00+00:00", "kernel": "vmlinuz64",
                     "initrd": "core.gz", "files": {"vmlinuz64": {"sha256": SHA, "size": 1},
                                                    "core.gz": {"sha256": SHA, "size": 2}}},
    "history": {"config": "default", "booted": ["a", "b"]},
    "bootloader.json": {"sets": [{"pxelinux.0": SHA, "ldlinux.c32": SHA}]},
    "lock": {"tcbuild": "0.1.0", "recipe": "r", "files": {"15.x/a.tcz": SHA,
                                                         "15.x/a.tcz.dep": "absent"}},
    "ref": {"sha256": hashlib.sha256(b"abc").hexdigest(), "size": 3, "source": "http://m/a"},
}
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True),
                   st.text(max_size=6), st.sampled_from([SHA, "absent", "a/b", "..", "",
                                                         "2027-01-15T08:00:00", "rel"]))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=8)


def _mutate(doc: object, draw: st.DataObject) -> object:
    """The document with one value somewhere replaced, or one key dropped."""
    if isinstance(doc, dict) and doc and draw.draw(st.booleans()):
        key = draw.draw(st.sampled_from(sorted(doc)))
        if draw.draw(st.booleans()):
            return {k: v for k, v in doc.items() if k != key}
        return {**doc, key: _mutate(doc[key], draw)}
    if isinstance(doc, list) and doc and draw.draw(st.booleans()):
        i = draw.draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], _mutate(doc[i], draw), *doc[i + 1:]]
    return draw.draw(VALUES)


def _read(kind: str, text: str, tmp: Path) -> object:
    if kind == "build.json":
        return Manifest.parse(text, str(tmp / "build.json"))
    if kind == "release.json":
        (tmp / "rel").mkdir(exist_ok=True)
        (tmp / "rel/release.json").write_text(text)
        return Release.read(tmp / "rel")
    if kind == "history":
        history_path(tmp, "default").parent.mkdir(parents=True, exist_ok=True)
        history_path(tmp, "default").write_text(text)
        return History.read(tmp, "default")
    if kind == "bootloader.json":
        (tmp / BOOTLOADER).parent.mkdir(parents=True, exist_ok=True)
        (tmp / BOOTLOADER).write_text(text)
        return read_bootsets(tmp)
    if kind == "lock":
        (tmp / "r.lock").write_text(text)
        return LockFile.read(tmp / "r.lock")
    cache = Cache(tmp / "cache")
    cache.store_bytes("seed", b"abc", "http://m/seed")  # the object the seed ref names
    (tmp / "cache/refs/a.tcz.json").write_text(text)
    return cache.lookup("a.tcz")


def test_each_reader_reads_what_its_writer_wrote(tmp_path: Path) -> None:
    for kind, doc in SEEDS.items():
        assert _read(kind, json.dumps(doc), tmp_path) is not None, kind
    manifest = _read("build.json", json.dumps(SEEDS["build.json"]), tmp_path)
    assert isinstance(manifest, Manifest) and Manifest.parse(manifest.text().decode(),
                                                             "x") == manifest
    rel = _read("release.json", json.dumps(SEEDS["release.json"]), tmp_path)
    assert isinstance(rel, Release) and json.loads(rel.text()) == SEEDS["release.json"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SEEDS)), st.data(), st.one_of(st.none(), st.integers(0, 400)))
def test_state_readers_under_mutated_json(kind: str, draw: st.DataObject,
                                          cut: int | None) -> None:
    text = json.dumps(_mutate(SEEDS[kind], draw))
    if cut is not None:  # a torn or hand-edited file
        text = text[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _read(kind, text, Path(tmp))
        except TcbuildError as e:
            assert len(str(e).splitlines()) == 1, str(e)
            assert str(e).startswith(tmp), str(e)


def test_a_history_ahead_of_its_config_is_cut_back() -> None:
    """A switch killed between writing the history and renaming the config: the config still
    boots b, so c (never booted) is not in the history, and a rollback goes to a."""
    ahead = History("default", ("a", "b", "c"))
    assert ahead.upto("b").booted == ("a", "b") and ahead.upto("b").back({"a", "b"}) == "a"
    assert ahead.upto("x").booted == ("a", "b", "c", "x")  # switched by hand: kept, and x added
    now = ahead.upto("c")
    assert now.back({"a", "c"}) == "a"  # b was pruned: the step goes past it
    assert now.switched("a", {"a", "c"}).booted == ("a",)  # a rollback steps back
    assert now.switched("b", {"a", "b", "c"}).booted == ("a", "b")
    assert now.switched("a", {"a", "b", "c"}).booted == ("a", "b", "c", "a")  # a chosen one


def test_a_root_twice_or_a_wait_without_end_is_bad_input_in_the_library(tmp_path: Path) -> None:
    """The same root under two spellings would wait on its own lock; `nan` or `inf` never
    times out: both are refused before any lock is taken."""
    from tcbuild import InputError
    from tcbuild.stages.publish import publish_all, rollback_all
    from tcbuild.tftproot.verify import verify_all

    root = tmp_path / "tftp"
    root.mkdir()
    (tmp_path / "x").mkdir()
    twice = [root, tmp_path / "x/../tftp"]
    recipe = load_recipe(ROOT / "recipes/gameserver.toml")
    named = f"{twice[1]}: the TFTP root is named twice (also as {root})"
    for call in (functools.partial(rollback_all, twice, wait=0.1),
                 functools.partial(verify_all, twice),
                 functools.partial(publish_all, recipe, twice, wait=0.1)):
        with pytest.raises(InputError) as refused:
            call()
        assert str(refused.value) == named
    for wait in (math.nan, math.inf, -1.0):
        for call in (functools.partial(pub.rollback, root, wait=wait),
                     functools.partial(rollback_all, [root, tmp_path], wait=wait),
                     functools.partial(publish_all, recipe, root, wait=wait)):
            with pytest.raises(InputError) as refused:
                call()
            assert str(refused.value) == f"wait: {wait!r} is not a finite number of seconds >= 0"
    assert not (root / "tcbuild").exists()
