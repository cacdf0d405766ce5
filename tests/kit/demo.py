"""`make demo`: the whole pipeline on a machine without internet, ending in the cluster.

It builds a STAND-IN Tiny Core mirror (Debian's kernel, its NFS and e1000 modules,
busybox-static and Debian's ISC dhclient, laid out like the real mirror), serves it on
loopback, then runs the operator's commands on the example recipe: build, publish into
build/tftpboot, verify. As root it then runs the seed's cluster in network namespaces
(tests/kit/clusterlab.py): `tcbuild server-config` for the example inventory, the boot server's
dhcpd, tftpd-hpa, rsyslogd and NFS-Ganesha, and both nodes PXE-booting under QEMU at once; it
shows the boot server's view of each node and `tcbuild fleet`, then rolls a changed image out
over both nodes with `tcbuild rollout` (each node power-cycled through its BMC, OpenIPMI's
ipmi_sim: tests/kit/fleetlab.py) and shows `tcbuild fleet` again. Not as root (namespaces need
it) one node PXE-boots under QEMU's own network (`tcbuild boot-test`) and its console is shown.
Only Debian's package archive is used (once, for the kernel); everything else is local.

    python -m tests.kit.demo [--tftp DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tcbuild.config.inventoryfile import load_inventory

from .bootkit import DEFAULT_KERNEL_CACHE, build_boot_mirror, debian_kernel
from .clusterlab import Cluster, external_mac, fill_share
from .fleetlab import FleetLab, lab_inventory
from .mirrortree import MirrorServer
from .netns import Lab

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "recipes/gameserver.toml"
INVENTORY = "examples/cluster.toml"
MARKER = "bootlocal: game-server node, build"
SHOWN = ("tc-init:", "tc-ext:", "bootlocal:", "PXELINUX", "Loading tcbuild/")
CLUSTER_TIMEOUT = 180.0  # seconds for both nodes to run their game servers
ROLLOUT = ["--waves", "1,100%", "--healthy-for", "10", "--boot-timeout", "180", "--poll", "1"]


def run(*args: str) -> None:
    """Run a tcbuild command as an operator would, echoing it; stop the demo if it fails."""
    print(f"\n$ tcbuild {shlex.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "tcbuild", *args], cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(f"demo: `tcbuild {args[0]}` failed (exit status {done.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tftp", type=Path, default=ROOT / "build/tftpboot")
    parser.add_argument("--work", type=Path, default=ROOT / "build/demo")
    args = parser.parse_args()
    work, tftp = args.work.resolve(), args.tftp.resolve()

    print("== tcbuild demo: STAND-IN mirror (Debian's kernel + busybox-static), not Tiny Core's")
    kit = debian_kernel(DEFAULT_KERNEL_CACHE)
    print(f"kernel {kit.version} from Debian's linux-image package "
          f"(cached in {DEFAULT_KERNEL_CACHE})")
    mirror_root = work / "mirror"
    if not (mirror_root / "15.x").is_dir():
        build_boot_mirror(mirror_root, kit)
    print(f"stand-in mirror: {mirror_root}")
    tftp.mkdir(parents=True, exist_ok=True)
    with MirrorServer(mirror_root) as mirror:
        print(f"served at {mirror.url} (loopback only)")
        common = ["--mirror", mirror.url, "--cache", str(work / "cache")]
        run("build", RECIPE, *common, "--out", str(work / "gameserver"))
        run("publish", RECIPE, "--tftp", str(tftp), "--inventory", INVENTORY, *common,
            "--out", str(work / "gameserver"))
    run("verify", "--tftp", str(tftp))
    run("releases", "--tftp", str(tftp))
    if os.geteuid() == 0:
        cluster(work, tftp)
    else:
        print("\ndemo: not root, so one node under QEMU's own network instead of the cluster "
              "(network namespaces need root)")
        single_node(work, tftp)


def single_node(work: Path, tftp: Path) -> None:
    """One node PXE-boots the tree under QEMU's user-mode network; its boot steps shown."""
    log = work / "console.log"
    try:
        run("boot-test", "--tftp", str(tftp), "--expect", MARKER, "--log", str(log))
    finally:
        if log.exists():
            print(f"\n-- the node's console ({log}), boot steps only --")
            for line in log.read_text(errors="replace").splitlines():
                if line.strip().startswith(SHOWN) or "] Linux version" in line:
                    print(f"   {line.strip()}")
    print(f"\nThe tree in {tftp} is what a TFTP server would serve (`tcbuild server-config "
          f"{INVENTORY}` writes the boot server's side).\nAgainst the real mirror: make image")


def cluster(work: Path, tftp: Path) -> None:
    """The boot server's daemons in namespaces, both nodes booting at once behind their BMCs,
    their view, then a rollout of a changed image over both."""
    logs, share, lab_dir, site = work / "remote", work / "share", work / "lab", work / "site"
    for directory in (logs, lab_dir, site):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    # The example inventory, but the log host writes under build/, and each node has a BMC.
    inventory_file = work / "cluster.toml"
    shutil.copyfile(ROOT / INVENTORY, inventory_file)
    lab_inventory(inventory_file, logs, work / "bmc.pw")
    run("server-config", str(inventory_file), "--out", str(work / "server"))
    inventory = load_inventory(inventory_file)
    fill_share(share, "master", inventory.cluster.game_log_tag, error=None)
    build_id = json.loads((work / "gameserver/build.json").read_text())["build_id"][:12]
    files = {p.name: p for p in (work / "server").iterdir()}
    print("\n== the cluster, in network namespaces: boot server 10.1.1.1 (dhcpd, tftpd-hpa, "
          "rsyslogd, NFS-Ganesha), gateway, two nodes under QEMU, each behind its BMC "
          "(ipmi_sim)", flush=True)
    with Lab(lab_dir) as lab:
        net = Cluster(lab, inventory, lab_dir, files, tftp, share, logs, build_id)
        fleet = FleetLab(net, site, inventory_file)
        try:
            for start in (net.start_dhcpd, net.start_tftpd, fleet.start_rsyslogd,
                          net.start_ganesha):
                print(f"started {start().name}", flush=True)
            for host in inventory.hosts[:2]:
                node = fleet.power_on(host.name, host.mac, external_mac(host))
                print(f"booting {host.name} (eth1 {host.mac} on the internal bridge, eth0 on "
                      f"the external one) through its BMC {node.url}, console in "
                      f"{node.console}", flush=True)
            for host in inventory.hosts[:2]:
                net.wait_log(f"{host.name}.log", "master: heartbeat 1", CLUSTER_TIMEOUT)
            print("\n== the boot server's view")
            for host in inventory.hosts[:2]:
                print("\n".join(net.view(host)) + "\n")
            run("fleet", "--inventory", str(inventory_file), "--logs", str(logs), "--tftp",
                str(tftp))
            rollout(fleet, work, tftp)
        finally:
            fleet.close()
    print("\nEvery daemon, BMC and QEMU stopped, every namespace deleted. The same cluster is "
          "the test tests/test_cluster_e2e.py; the rollout and enrollment, "
          "tests/test_fleet_e2e.py.\nAgainst the real mirror: make image")


def rollout(fleet: FleetLab, work: Path, tftp: Path) -> None:
    """A changed image (one more overlay file) rolled out: server1, then server2."""
    site = fleet.site
    for name in ("recipes", "overlays"):
        shutil.copytree(ROOT / name, site / name)
    (site / "examples").mkdir()
    shutil.copyfile(fleet.inventory_file, site / INVENTORY)
    note = site / "overlays/gameserver/usr/local/etc/release-note"
    note.write_text("the demo's second release\n")
    print(f"\n== a changed image: {note.relative_to(site)} added; rolled out in waves, each "
          "node power-cycled through its BMC and proven healthy from the log host", flush=True)
    with MirrorServer(work / "mirror") as mirror:
        args = ["rollout", RECIPE, "--tftp", str(tftp), "--inventory", INVENTORY, "--mirror",
                mirror.url, "--cache", str(work / "cache"), "--out", str(work / "gameserver"),
                *ROLLOUT]
        print(f"\n$ tcbuild {shlex.join(args)}", flush=True)
        done = fleet.tcbuild(*args)
        print(done.stdout + done.stderr, end="", flush=True)
        if done.returncode != 0:
            sys.exit(f"demo: `tcbuild rollout` failed (exit status {done.returncode})")
    run("fleet", "--inventory", str(site / INVENTORY), "--tftp", str(tftp))


if __name__ == "__main__":
    main()
