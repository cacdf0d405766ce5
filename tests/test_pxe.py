"""Published trees boot: the example recipe, published with the real pxelinux, PXE-booted.

QEMU's user-mode network serves the TFTP root (its own DHCP + TFTP, `bootfile=pxelinux.0`);
the image is the example recipe built against the stand-in boot mirror (Debian's kernel, static
busybox, an init that runs /opt/bootlocal.sh as Tiny Core does). The example's bootlocal.sh
prints its build id first thing, so each boot says exactly which release came up. Five boots:
the default config, a per-MAC config, a rollback, a kill -9 mid-publish, a missing initrd.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tcbuild.tftproot import releases as pub

from .kit.nodekit import CANARY, OTHER, boot, booted_build, built_id, kernel_line, publish, tcbuild


def test_published_example_boots_default_and_per_mac(node: Path) -> None:
    build_id = publish(node)
    assert tcbuild(node, "verify", "--tftp", "tftp").returncode == 0

    done, log = boot(node, OTHER, name="default")
    assert booted_build(done, log) == build_id
    assert "PXELINUX 6.04" in log  # the real bootloader, from Debian's pxelinux
    assert "loglevel=7" not in kernel_line(log)

    done, log = boot(node, CANARY, name="canary")
    assert booted_build(done, log) == build_id
    assert "console=ttyS0,115200 loglevel=7 initrd=" in kernel_line(log)  # from its 01-<mac>


def test_rollback_boots_the_previous_release(node: Path) -> None:
    old = publish(node)
    (node / "overlays/gameserver/etc").mkdir()
    (node / "overlays/gameserver/etc/motd").write_text("second release\n")
    new = publish(node)
    assert new != old
    done = tcbuild(node, "rollback", "--tftp", "tftp")
    assert done.returncode == 0, done.stderr
    done, log = boot(node, OTHER)
    assert booted_build(done, log) == old


def test_kill_9_mid_publish_boots_the_old_or_the_new_release(node: Path) -> None:
    old = publish(node)
    (node / "overlays/gameserver/etc").mkdir()
    (node / "overlays/gameserver/etc/motd").write_text("next release\n")
    assert tcbuild(node, "build", "recipes/gameserver.toml", "--cache", "cache").returncode == 0
    new = built_id(node)
    tftp = node / "tftp"
    (first,) = pub.current(tftp)
    rng = random.Random(5)
    for trial in range(6):  # the publish itself (build up to date) takes well under a second
        proc = subprocess.Popen(
            [sys.executable, "-m", "tcbuild", "publish", "recipes/gameserver.toml", "--tftp",
             "tftp", "--inventory", "examples/cluster.toml", "--cache", "cache", "--offline",
             "-q"], cwd=node,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert pub.verify(tftp) == []
        serving = set(pub.current(tftp))
        # each config boots the old release or the new build's one; the configs switch in a
        # row of renames, so a kill inside that row may leave some on each until the next one
        assert first in serving or len(serving) == 1
        assert {r.id for r in pub.releases(tftp) if r.id in serving and r.id != first} <= {
            r.id for r in pub.releases(tftp) if r.build_id.startswith(new)}
        for rid in serving - {first}:
            if trial < 5:  # it finished (or nearly): back to the old for the next one
                pub.switch(tftp, rid, first)
    done, log = boot(node, OTHER)  # a host without its own config: pxelinux.cfg/default
    assert booted_build(done, log) in {old, new}
    booted = {r.id: r.build_id for r in pub.releases(tftp)}[pub.default_release(tftp)]
    assert booted.startswith(booted_build(done, log))  # the config names what booted


def test_a_missing_initrd_fails_fast_and_verify_names_it(node: Path) -> None:
    publish(node)
    (release,) = pub.releases(node / "tftp")
    (release.path / "core.hts.gz").unlink()
    problems = tcbuild(node, "verify", "--tftp", "tftp")
    assert problems.returncode == 1
    assert f"{pub.RELEASES}/{release.id}/core.hts.gz" in problems.stderr
    done, _ = boot(node, OTHER)
    assert done.returncode == 1
    first = done.stderr.splitlines()[0]
    assert first.endswith(f"Loading {pub.RELEASES}/{release.id}/core.hts.gz...failed: "
                          "No such file or directory"), first
    assert float(first.split("after ")[1].split(" s")[0]) < 40  # not the 120 s timeout
