"""Publishing into a TFTP root: releases, the atomic switch, per-MAC configs, rollback, verify.

These tests use stand-in bootloader files (publishing only copies them); the PXE boot tests
boot a published tree with the real pxelinux.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tcbuild import load_recipe
from tcbuild.boot import syslinux
from tcbuild.boot.pxelinux import parse
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions, BuildResult, build
from tcbuild.tftproot import releases as pub
from tcbuild.tftproot import writing
from tcbuild.tftproot.state import read_histories
from tcbuild.tftproot.verify import verify_all

from .conftest import verified
from .kit.mirrortree import MirrorServer

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0


def built(site: Path, recipe: str = "recipes/gameserver.toml") -> tuple[object, BuildResult]:
    loaded = load_recipe(site / recipe)
    options = BuildOptions(out_dir=site / "build" / loaded.name,
                           fetch=FetchOptions(cache_dir=site / "cache"))
    return loaded, build(loaded, options)


def publish_at(site: Path, now: float, inventory: bool = False, keep: int = 5,
               recipe: str = "recipes/gameserver.toml") -> pub.Plan:
    loaded, result = built(site, recipe)
    inv = load_inventory(site / "examples/cluster.toml") if inventory else None
    plan = pub.plan(loaded, result.kernel, result.initrd, result.build_id,  # type: ignore[arg-type]
                        site / "tftp", inv, keep, pub.find_bootloader(site / "bootloader"),
                        now=now)
    with writing.locked(site / "tftp"):
        pub.execute(plan)
    verified(site / "tftp")
    return plan


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def tcbuild(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_publish_writes_a_complete_world_readable_release(site: Path) -> None:
    plan = publish_at(site, T0)
    tftp = site / "tftp"
    release = tftp / pub.RELEASES / plan.release_id
    assert sorted(p.name for p in release.iterdir()) == ["core.hts.gz", "release.json",
                                                        "vmlinuz64"]
    assert plan.release_id.startswith("20270115T080000Z-")
    for path in tftp.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
        assert not path.is_symlink()
    config = parse((tftp / "pxelinux.cfg/default").read_text(), "default")
    label = config.label(config.default)
    assert (tftp / label.kernel).read_bytes() == (site / "build/gameserver/vmlinuz64").read_bytes()
    assert label.append == "base norestore nodhcp cron console=tty0 console=ttyS0,115200"
    assert (tftp / "pxelinux.0").read_bytes() == b"stand-in pxelinux.0\n"
    assert (tftp / "README.site").read_text() == "the operator's own file\n"
    verified(tftp)


def test_new_release_switches_and_rollback_returns(site: Path) -> None:
    first = publish_at(site, T0)
    (site / "overlays/gameserver/etc").mkdir()
    (site / "overlays/gameserver/etc/motd").write_text("second release\n")
    second = publish_at(site, T0 + 60)
    tftp = site / "tftp"
    assert first.release_id != second.release_id
    assert pub.current(tftp) == {second.release_id: {"default"}}
    assert pub.previous(tftp) == (second.release_id, first.release_id)

    rolled = tcbuild("rollback", "--tftp", tftp)
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout == (f"{tftp}: default now boots {first.release_id} "
                             f"(was {second.release_id})\n")
    assert pub.current(tftp) == {first.release_id: {"default"}}
    verified(tftp)
    listing = tcbuild("releases", "--tftp", tftp).stdout.splitlines()
    assert listing[0].startswith(first.release_id) and listing[0].endswith("current: default")
    assert listing[1].startswith(second.release_id) and "current" not in listing[1]


def test_releases_in_one_second_keep_their_publish_order(site: Path) -> None:
    """Ids share the second; the order (and so rollback) comes from the publish time.

    The builds are published in descending build-id order, so ordering by id would reverse it.
    """
    motd = site / "overlays/gameserver/etc/motd"
    motd.parent.mkdir()
    variants = {}
    for text in ("a\n", "b\n", "c\n"):
        motd.write_text(text)
        variants[built(site)[1].build_id] = text
    published = []
    for n, build_id in enumerate(sorted(variants, reverse=True)):
        motd.write_text(variants[build_id])
        published.append(publish_at(site, T0 + 0.1 + n * 0.3).release_id)
    assert len({rid[:16] for rid in published}) == 1  # the same second
    assert [r.id for r in pub.releases(site / "tftp")] == published
    assert pub.previous(site / "tftp") == (published[2], published[1])


def test_old_releases_are_pruned_but_never_current_or_previous(site: Path) -> None:
    ids = []
    for i in range(4):
        (site / "overlays/gameserver/etc").mkdir(exist_ok=True)
        (site / "overlays/gameserver/etc/motd").write_text(f"release {i}\n")
        ids.append(publish_at(site, T0 + 60 * i, keep=2).release_id)
    kept = [r.id for r in pub.releases(site / "tftp")]
    assert kept == ids[2:]
    pub.switch(site / "tftp", ids[3], ids[2])  # roll back, then publish again
    (site / "overlays/gameserver/etc/motd").write_text("release 4\n")
    ids.append(publish_at(site, T0 + 600, keep=1).release_id)
    kept = [r.id for r in pub.releases(site / "tftp")]
    assert kept == [ids[2], ids[4]]  # the newest, and the one it replaced as current
    verified(site / "tftp")


def test_inventory_groups_get_per_mac_configs(site: Path) -> None:
    plan = publish_at(site, T0, inventory=True)
    assert sorted(plan.configs) == ["01-52-54-00-12-34-57", "default"]
    canary = parse((site / "tftp/pxelinux.cfg/01-52-54-00-12-34-57").read_text(), "canary")
    assert canary.label("tinycore").append == (
        "base norestore nodhcp cron console=tty0 console=ttyS0,115200 loglevel=7")

    # a group with its own recipe: publishing that recipe writes only its hosts' configs
    shutil.copy(site / "recipes/gameserver.toml", site / "recipes/canary.toml")
    inventory = site / "examples/cluster.toml"
    inventory.write_text(inventory.read_text().replace(
        '[group.canary]                           # hosts that boot another kernel line\n'
        'append = "base norestore nodhcp cron console=tty0 console=ttyS0,115200 loglevel=7"',
        '[group.canary]\nrecipe = "../recipes/canary.toml"'))
    before = (site / "tftp/pxelinux.cfg/default").read_text()
    other = publish_at(site, T0 + 60, inventory=True, recipe="recipes/canary.toml")
    assert list(other.configs) == ["01-52-54-00-12-34-57"]
    assert (site / "tftp/pxelinux.cfg/default").read_text() == before
    verified(site / "tftp")


def test_verify_names_every_problem(site: Path) -> None:
    plan = publish_at(site, T0)
    tftp = site / "tftp"
    release = tftp / pub.RELEASES / plan.release_id
    (release / "core.hts.gz").chmod(0o600)
    (release / "vmlinuz64").write_bytes(b"tampered")
    (tftp / "ldlinux.c32").unlink()
    (tftp / "escape").symlink_to("/etc")
    problems = pub.verify(tftp)
    kernel = f"tcbuild/releases/{plan.release_id}/vmlinuz64"
    initrd = f"tcbuild/releases/{plan.release_id}/core.hts.gz"
    assert problems == [
        f"{tftp / 'ldlinux.c32'}: missing (from Debian's syslinux-common)",
        f"{tftp / 'pxelinux.cfg/default'}: {kernel}: does not match the checksum recorded at "
        "publish time",
        f"{tftp / 'pxelinux.cfg/default'}: {initrd}: not readable by others (the TFTP server "
        "cannot serve it)",
        f"{tftp / 'escape'}: symlink points outside the TFTP root (/etc)",
    ]
    result = tcbuild("verify", "--tftp", tftp)
    assert result.returncode == 1 and result.stderr.splitlines() == problems
    (release / "core.hts.gz").unlink()
    assert f"{initrd}: missing" in "\n".join(pub.verify(tftp))
    (tftp / "pxelinux.cfg/01-aa").write_text("LABEL x\n    KERNEL a\n")
    assert pub.verify(tftp)[-1].endswith("01-aa: no DEFAULT label")


def test_dry_run_lock_and_missing_bootloader_change_nothing(site: Path, mirror: MirrorServer
                                                            ) -> None:
    tftp = site / "tftp"
    publish_at(site, T0)
    before = tree(tftp)
    args = ["publish", site / "recipes/gameserver.toml", "--tftp", tftp, "--cache",
            site / "cache", "--bootloader-dir", site / "bootloader"]
    again = tcbuild(*args, cwd=site)  # the same build: it is already what the tree serves
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith("is already published and current; nothing to do\n")
    assert tree(tftp) == before
    verified(tftp)
    forced = tcbuild(*args, "--force", "--dry-run", cwd=site)
    assert forced.stdout.startswith("new release tcbuild/releases/"), forced.stdout
    (site / "overlays/gameserver/etc").mkdir()
    (site / "overlays/gameserver/etc/motd").write_text("next\n")
    dry = tcbuild(*args, "--dry-run", cwd=site)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0].startswith("new release tcbuild/releases/")
    assert "pxelinux.cfg/default: replace" in dry.stdout
    assert tree(tftp) == before
    with writing.locked(tftp):
        busy = tcbuild(*args, "--wait", "0.3", cwd=site)
    assert busy.returncode == 1
    assert busy.stderr == f"{tftp / writing.LOCK}: another publish is running (waited 0 s)\n"
    assert tree(tftp) == before
    (site / "bootloader/ldlinux.c32").unlink()
    missing = tcbuild(*args, cwd=site)
    assert (missing.returncode, missing.stderr) == (
        1, f"ldlinux.c32 not found in {site / 'bootloader'} (apt-get install syslinux-common)\n")
    assert tree(tftp) == before
    nowhere = tcbuild(*args[:2], "--tftp", site / "missing", *args[4:], cwd=site)
    assert (nowhere.returncode, nowhere.stderr) == (
        2, f"{site / 'missing'}: the TFTP root does not exist\n")


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_a_valid_tree(site: Path) -> None:
    """A publish killed at random points: the tree always verifies and boots old or new."""
    import random
    import signal
    import time

    old = publish_at(site, T0).release_id
    tftp = site / "tftp"
    (site / "overlays/gameserver/etc").mkdir()
    (site / "overlays/gameserver/etc/motd").write_text("new\n")
    built(site)  # so each trial only publishes
    args = [sys.executable, "-m", "tcbuild", "publish", str(site / "recipes/gameserver.toml"),
            "--tftp", str(tftp), "--cache", str(site / "cache"), "--bootloader-dir",
            str(site / "bootloader"), "--offline", "-q"]
    started = time.monotonic()  # how long a whole publish takes here: the kills fall within
    subprocess.run(args, cwd=site, check=True, stdout=subprocess.DEVNULL)
    took = time.monotonic() - started
    pub.switch(tftp, set(pub.current(tftp)).pop(), old)
    rng = random.Random(7)
    killed = 0
    for _ in range(24):
        proc = subprocess.Popen(args, cwd=site, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, max(0.1, took)))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        verified(tftp)
        booted = set(pub.current(tftp))
        assert len(booted) == 1  # the old release or a new one, whole
        if booted != {old}:  # this one finished: back to the old, so the next has work to do
            pub.switch(tftp, booted.pop(), old)
        for release in pub.releases(tftp):  # every listed release is complete
            assert {p.name for p in release.path.iterdir()} == {
                "vmlinuz64", "core.hts.gz", "release.json"}
    assert publish_at(site, T0 + 3600).release_id  # and the next publish works
    assert not list((tftp / pub.RELEASES).glob(".*.partial"))
    assert killed >= 12  # most trials really died mid-way


def test_secrets_are_refused_unless_allowed(site: Path) -> None:
    tftp = site / "tftp"
    overlay = site / "overlays/gameserver"
    (overlay / "root/.ssh").mkdir(parents=True)
    (overlay / "root/.ssh/id_ed25519").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
        "-----END OPENSSH PRIVATE KEY-----\n")
    (overlay / "etc").mkdir()
    (overlay / "etc/shadow").write_text("root:$6$salt$hash:19000::::::\ntc:!:19000::::::\n"
                                        "nobody:*:19000::::::\n")
    (overlay / "etc/site.token").write_text("abc\n")
    recipe = site / "recipes/gameserver.toml"
    recipe.write_text(recipe.read_text() + '\n[files."/etc/site.token"]\nsecret = true\n')
    before = tree(tftp)
    args = ["publish", recipe, "--tftp", tftp, "--cache", site / "cache", "--bootloader-dir",
            site / "bootloader"]
    refused = tcbuild(*args, cwd=site)
    assert refused.returncode == 1
    initrd = "build/gameserver/core.hts.gz"  # relative to where tcbuild ran
    tail = "; TFTP would serve it to anyone (set [image] allow_secrets = true to publish anyway)"
    assert refused.stderr.splitlines() == [
        f"{initrd}: /etc/shadow: password hashes for root{tail}",
        f"{initrd}: /etc/site.token: marked secret in the recipe{tail}",
        f"{initrd}: /root/.ssh/id_ed25519: holds a private key{tail}",
    ]
    assert tree(tftp) == before
    recipe.write_text(recipe.read_text().replace("[vars]", "[image]\nallow_secrets = true\n\n"
                                                 "[vars]", 1))
    allowed = tcbuild(*args, cwd=site)
    assert allowed.returncode == 0, allowed.stderr
    assert len(allowed.stderr.splitlines()) == 3
    assert all(line.startswith("warning: ") and line.endswith("published anyway "
               "(allow_secrets)") for line in allowed.stderr.splitlines())
    verified(tftp)


def test_one_release_into_several_roots_switches_only_once_every_root_holds_it(
        site: Path) -> None:
    first, second = site / "tftp", site / "tftp2"
    second.mkdir()
    args = ["publish", site / "recipes/gameserver.toml", "--tftp", first, "--tftp", second,
            "--cache", site / "cache", "--bootloader-dir", site / "bootloader"]
    done = tcbuild(*args, cwd=site)
    assert done.returncode == 0, done.stderr
    ids = {line.split()[-1] for line in done.stdout.splitlines() if "published release" in line}
    assert len(ids) == 1 and len(done.stdout.splitlines()) > 2, done.stdout
    (release,) = ids
    for root in (first, second):
        verified(root)
        assert set(pub.current(root)) == {release}

    # the second root cannot take the next release: neither root switches, nothing is left
    (site / "overlays/gameserver/etc").mkdir()
    (site / "overlays/gameserver/etc/motd").write_text("next\n")
    (second / "pxelinux.0").unlink()
    (second / "pxelinux.0").mkdir()
    before = {root: tree(root) for root in (first, second)}
    failed = tcbuild(*args, cwd=site)
    assert failed.returncode == 1
    assert len(failed.stderr.splitlines()) == 1 and str(second / "pxelinux.0") in failed.stderr
    assert {root: tree(root) for root in (first, second)} == before
    verified(first)

    (second / "pxelinux.0").rmdir()
    again = tcbuild(*args, cwd=site)
    assert again.returncode == 0, again.stderr
    (new,) = {line.split()[-1] for line in again.stdout.splitlines() if "published" in line}
    assert new != release
    for root in (first, second):
        verified(root)
        assert set(pub.current(root)) == {new}
        assert {r.id for r in pub.releases(root)} == {release, new}

    # verify and rollback take both roots: one step back in each, and a disagreement is named
    both = ["--tftp", first, "--tftp", second]
    assert tcbuild("verify", *both, cwd=site).stdout == f"{first}, {second}: ok\n"
    back = tcbuild("rollback", *both, cwd=site)
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines() == [f"{root}: default now boots {release} (was {new})"
                                        for root in (first, second)]
    for root in (first, second):
        assert set(pub.current(root)) == {release}
    assert tcbuild("rollback", "--tftp", second, new, cwd=site).returncode == 0
    split = tcbuild("verify", *both, cwd=site)
    assert split.returncode == 1
    assert split.stderr == (f"pxelinux.cfg/default: the roots disagree: boots {first} {release}, "
                            f"{second} {new}\n")
    before = {root: tree(root) for root in (first, second)}
    refused = tcbuild("rollback", *both, release, cwd=site)
    assert refused.returncode == 2 and "the roots disagree" in refused.stderr, refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert {root: tree(root) for root in (first, second)} == before


def modes(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under `root` with its mode and its bytes (a symlink: its target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        what = (str(path.readlink()) if path.is_symlink() else
                hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode)
                else "dir")
        found[str(path.relative_to(root))] = (info.st_mode, what)
    return found


def test_modes_are_the_trees_whatever_the_umask_and_verify_checks_the_way(site: Path) -> None:
    """Under umask 077 every directory made is 0755 and every file 0644; `verify` names the
    first directory on the way to a served file that others cannot read and search."""
    tftp = site / "tftp"
    args = ["publish", site / "recipes/gameserver.toml", "--tftp", tftp, "--cache",
            site / "cache", "--bootloader-dir", site / "bootloader", "-q"]
    done = subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.umask(0o077))
    assert done.returncode == 0, done.stderr
    made = {p: stat.S_IMODE(p.lstat().st_mode) for p in tftp.rglob("*")
            if p.name != "README.site"}
    assert {p: m for p, m in made.items() if m != (0o755 if p.is_dir() else 0o644)} == {}
    verified(tftp)

    (tftp / "tcbuild").chmod(0o711)  # searchable, not readable: still refused
    (tftp / "pxelinux.cfg").chmod(0o750)
    assert pub.verify(tftp) == [
        f"{tftp / 'pxelinux.cfg'}: directory not readable and searchable by others (mode "
        "0750; the TFTP server cannot serve what is in it)",
        f"{tftp / 'tcbuild'}: directory not readable and searchable by others (mode 0711; the "
        "TFTP server cannot serve what is in it)",
    ]
    (tftp / "pxelinux.cfg").chmod(0o755)
    (tftp / "tcbuild").chmod(0o755)
    (tftp / "ldlinux.c32").chmod(0o640)
    tftp.chmod(0o700)
    assert pub.verify(tftp) == [f"{tftp}: directory not readable and searchable by others "
                                "(mode 0700; the TFTP server cannot serve what is in it)"]
    tftp.chmod(0o755)
    assert pub.verify(tftp) == [f"{tftp / 'ldlinux.c32'}: not readable by others (the TFTP "
                                "server cannot serve it)"]


def test_per_mac_configs_follow_the_inventory(site: Path) -> None:
    """A host that leaves its group loses its config in the next publish (with its twin and
    history) by the recipe that wrote it, never by another; `verify --inventory` names a
    config no host has."""
    tftp, mac = site / "tftp", "01-52-54-00-12-34-57"
    inventory = site / "examples/cluster.toml"
    stale = [tftp / "pxelinux.cfg" / mac, tftp / "ipxe" / f"{mac}.ipxe"]
    first = publish_at(site, T0, inventory=True)
    assert mac in first.configs and all(p.is_file() for p in stale)
    assert mac in read_histories(tftp)

    # the canary group gets its own recipe: its publish takes the host's config over
    shutil.copy(site / "recipes/gameserver.toml", site / "recipes/canary.toml")
    text = inventory.read_text()
    inventory.write_text(text.replace(
        '[group.canary]                           # hosts that boot another kernel line\n'
        'append = "base norestore nodhcp cron console=tty0 console=ttyS0,115200 loglevel=7"',
        '[group.canary]\nrecipe = "../recipes/canary.toml"'))
    canary = publish_at(site, T0 + 60, inventory=True, recipe="recipes/canary.toml")
    assert list(canary.configs) == [mac]
    owned = (tftp / "pxelinux.cfg" / mac).read_bytes()
    # the host leaves the group: the default recipe does not own its config, and keeps off it
    inventory.write_text(inventory.read_text().replace('group     = "canary"\n', ""))
    default = publish_at(site, T0 + 120, inventory=True, keep=1)
    assert (tftp / "pxelinux.cfg" / mac).read_bytes() == owned and default.retire == ()
    verify_inv = ["verify", "--tftp", tftp, "--inventory", inventory]
    assert tcbuild(*verify_inv).returncode == 0

    # the host leaves the inventory: verify names its config; the canary recipe retires it
    inventory.write_text(inventory.read_text().replace(
        '[[host]]\nname      = "server2"\nmac       = "52:54:00:12:34:57"', '[[host]]\nname'
        '      = "server3"\nmac       = "52:54:00:12:34:58"'))
    named = tcbuild(*verify_inv)
    assert (named.returncode, named.stderr) == (1, (
        f"{tftp / 'pxelinux.cfg' / mac}: no host of {inventory} has this MAC (left behind: "
        "publish with --inventory retires it)\n"))
    retired = publish_at(site, T0 + 180, inventory=True, recipe="recipes/canary.toml", keep=1)
    assert [p for p in stale if p.exists()] == [] and mac not in read_histories(tftp)
    assert (retired.retire, retired.configs) == ((mac,), {})
    assert pub.current(tftp) == {default.release_id: {"default"}}
    assert tcbuild(*verify_inv).returncode == 0
    # nothing boots the canary releases now: the next publish prunes them
    (site / "overlays/gameserver/etc").mkdir()
    (site / "overlays/gameserver/etc/motd").write_text("next\n")
    last = publish_at(site, T0 + 240, inventory=True, keep=1)
    assert {r.recipe for r in pub.releases(tftp)} == {str(site / "recipes/gameserver.toml")}
    assert last.retire == ()


def test_a_failed_multi_root_publish_leaves_every_root_as_it_was(site: Path) -> None:
    """Fail each root in turn, while the releases are written and while the configs switch:
    every root keeps its bytes and modes, the bootloader set and boot.ipxe included."""
    from tcbuild import TcbuildError
    from tcbuild.stages.publish import publish_all

    roots = [site / "tftp", site / "tftp2"]
    roots[1].mkdir()
    loaded = load_recipe(site / "recipes/gameserver.toml")
    options = BuildOptions(out_dir=site / "build/gameserver",
                           fetch=FetchOptions(cache_dir=site / "cache", progress=False))

    def publish(*where: Path, bootloader: str = "bootloader") -> list[pub.Plan]:
        return publish_all(loaded, list(where), options, bootloader_dir=site / bootloader)

    old = publish(*roots)[0].release_id
    (site / "overlays/gameserver/etc").mkdir()
    (site / "overlays/gameserver/etc/motd").write_text("next\n")
    for name in syslinux.PXE:  # a new syslinux build comes with the new release
        (site / "bootloader" / name).write_bytes(f"newer {name}\n".encode())
    for root in roots:
        (root / "boot.ipxe").write_text("#!ipxe\n# an older entry point\n")
    faults = [(root, name) for name in ("pxelinux.0", "ipxe/default.ipxe") for root in roots]
    for root, name in faults:  # the file becomes a directory: writing it fails
        kept = (root / name).read_bytes()
        (root / name).unlink()
        (root / name).mkdir()
        before = {r: modes(r) for r in roots}
        with pytest.raises(TcbuildError) as failed:
            publish(*roots)
        assert str(root / name) in str(failed.value)
        assert {r: modes(r) for r in roots} == before, (root, name)
        (root / name).rmdir()
        (root / name).write_bytes(kept)
    for root in roots:
        assert set(pub.current(root)) == {old}
    new = publish(*roots)[0].release_id
    for root in roots:
        verified(root)
        assert set(pub.current(root)) == {new}
        assert (root / "pxelinux.0").read_bytes() == b"newer pxelinux.0\n"
    assert verify_all(roots) == []

    # another bootloader set in one root: verify of both names each file they disagree on
    other = site / "bootloader2"
    other.mkdir()
    for name in syslinux.PXE:
        (other / name).write_bytes(f"other {name}\n".encode())
    publish_all(loaded, [roots[1]], options, bootloader_dir=other, force=True)
    digest = {root: {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:12]
                     for name in syslinux.PXE} for root in roots}
    disagree = [line for line in verify_all(roots) if "the roots disagree: sha256" in line]
    assert disagree == [f"{name}: the roots disagree: sha256 {roots[0]} {digest[roots[0]][name]}"
                        f", {roots[1]} {digest[roots[1]][name]}" for name in syslinux.PXE]


def test_a_dry_run_over_a_config_in_another_encoding_says_it_replaces_it(site: Path) -> None:
    tftp = site / "tftp"
    (tftp / "pxelinux.cfg").mkdir()
    (tftp / "pxelinux.cfg/default").write_bytes(b"# caf\xe9 (Latin-1)\nDEFAULT local\n")
    before = tree(tftp)
    loaded, result = built(site)
    plan = pub.plan(loaded, result.kernel, result.initrd, result.build_id,  # type: ignore[arg-type]
                    tftp, None, 5, pub.find_bootloader(site / "bootloader"), now=T0)
    assert "pxelinux.cfg/default: replace" in plan.describe()
    assert tree(tftp) == before
