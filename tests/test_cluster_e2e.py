"""The seed's whole cluster, booted: two nodes PXE-boot one image from the real boot server.

In network namespaces (tests/kit/clusterlab.py) the boot server runs ISC dhcpd, tftpd-hpa, rsyslogd
and NFS-Ganesha from the files `tcbuild server-config` wrote for the example inventory, serving
the tree `tcbuild publish` wrote and a share holding the game server; a gateway namespace is the
external network's router. Each node is a QEMU machine (TCG) with two NICs, eth0 external and
eth1 internal (the inventory's MAC, PXE), running the image's real dhclient, NFS client and
bootlocal.sh. Every assertion is made from the boot server's side (dhcpd's log, the log host's
files, Ganesha's connections) or, for the public address and route, from the gateway's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tcbuild.config.inventory import Host
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.tftproot.releases import releases

from .kit.clusterlab import GAME_ERROR, Cluster, fill_share
from .kit.netns import Lab
from .kit.nodekit import publish, tcbuild
from .kit.requires import require_tool

BOOT_TIMEOUT = 180.0  # seconds from QEMU's start to the game server: the budget, two at once
RETRIES_TIMEOUT = 150.0  # seconds bootlocal.sh may spend retrying the mount (10 x 5 s + mounts)


@pytest.fixture
def cluster(node: Path, lab: Lab) -> Cluster:
    """The example published, the boot server's files written; no daemon started yet."""
    for tool, package in (("dhcpd", "isc-dhcp-server"), ("in.tftpd", "tftpd-hpa"),
                          ("rsyslogd", "rsyslog"), ("ganesha.nfsd", "nfs-ganesha"),
                          ("busybox", "busybox-static")):
        require_tool(tool, package)
    logs = node / "remote"
    logs.mkdir()
    # The inventory is the example's; only the log host's directory is the test's.
    inventory_file = node / "examples/cluster.toml"
    text = inventory_file.read_text()
    inventory_file.write_text(text.replace("[cluster]\n", f'[cluster]\nlog_dir = "{logs}"\n', 1))
    build_id = publish(node)
    done = tcbuild(node, "server-config", "examples/cluster.toml", "--out", "server")
    assert done.returncode == 0, done.stderr
    inventory = load_inventory(inventory_file)
    fill_share(node / "share", "master", inventory.cluster.game_log_tag)
    return Cluster(lab, inventory, lab.workdir, {p.name: p for p in (node / "server").iterdir()},
                   (node / "tftp").resolve(), node / "share", logs, build_id)


def lines(text: str) -> list[str]:
    """The messages of a log host's file (rsyslog's format: time, sender, message)."""
    return [line.split(" ", 2)[2] for line in text.splitlines() if line.count(" ") >= 2]


def assert_node_up(cluster: Cluster, host: Host) -> None:
    """The node as the boot server and the gateway see it once its game server runs."""
    c, name = cluster.inventory.cluster, host.name
    fqdn = host.fqdn(c.domain)
    log = lines(cluster.log(f"{name}.log"))

    # dhcpd handed its fixed address twice: to the PXE firmware, then to the image's dhclient
    # (the firmware once more for each power cycle).
    dhcpd = cluster.daemons["dhcpd"].output()
    acks = dhcpd.count(f"DHCPACK on {host.ip} to {host.mac} via int0")
    assert acks == 2 + cluster.nodes[name].restarts, dhcpd
    assert any(re.fullmatch(rf"dhclient\[\d+\]: bound to {host.ip} -- renewal in \d+ seconds\.",
                            m) for m in log), log
    # The image's dhclient-script set the host name; the exit hook took option 187; both said
    # what they did.
    hook = "dhclient-exit-hook: "
    assert (f"{hook}BOUND on eth1: address {host.ip}, second-ip {host.second_ip}, "
            f"host-name {fqdn}") in log
    assert (f"{hook}ran: ifconfig eth0 {host.second_ip} netmask {c.external_network.netmask} "
            f"broadcast {c.external_network.broadcast_address} up") in log
    assert f"{hook}ran: ip -4 route replace default via {c.external_gateway} dev eth0" in log
    assert f"dhclient-script: hostname {fqdn}" in log
    nrpe = "/usr/local/etc/nagios/nrpe.cfg"
    assert f"{hook}ran: sed -i s/^server_address=.*/server_address={host.ip}/ {nrpe}" in log

    # The second address answers from beyond the gateway: a ping from an address the node has
    # no route to but its default one, so the reply from the second address came through it.
    assert cluster.ping_from_internet(str(host.second_ip)), f"{name}: no reply from beyond"

    # bootlocal.sh: the build it booted (once the log host could hear it), the share, the game.
    (release,) = releases(cluster.tftp)
    assert (f"bootlocal: game-server node, build {cluster.build_id}, release {release.id}, kernel "
            in "\n".join(log))
    share = f"{c.nfs_server}:{c.nfs_export}"
    assert any(m.startswith(f"bootlocal: mounted {share} on {c.nfs_mountpoint} (nfs4, ")
               for m in log), log
    assert (f"bootlocal: starting {c.nfs_mountpoint}/master as tc (stdout local0.info, "
            f"stderr local0.err, tag {c.game_log_tag})") in log
    assert str(host.ip) in cluster.nfs_clients()  # Ganesha serves it now
    assert "master: game server up as tc in /mnt/gameserver" in log

    # Its error file holds the game server's error line, and nothing else.
    assert lines(cluster.log(f"{name}-err.log")) == [f"{c.game_log_tag}: {GAME_ERROR}"]


def test_two_nodes_boot_mount_and_run_the_game_server(cluster: Cluster) -> None:
    for start in (cluster.start_dhcpd, cluster.start_tftpd, cluster.start_rsyslogd,
                  cluster.start_ganesha):
        start()
    hosts = cluster.inventory.hosts[:2]
    for index, host in enumerate(hosts):
        cluster.boot_node(host, index)
    for host in hosts:  # both within the budget, counted from the start of both
        cluster.wait_log(f"{host.name}.log", "master: heartbeat 1", BOOT_TIMEOUT)
    for host in hosts:
        assert_node_up(cluster, host)
    for host in hosts:  # and it keeps running
        cluster.wait_log(f"{host.name}.log", "master: heartbeat 3", 30)

    # The operator's view of the same files: each node booted the current release.
    done = subprocess.run([sys.executable, "-m", "tcbuild", "fleet", "--inventory",
                           str(cluster.inventory.path), "--logs", str(cluster.logs), "--tftp",
                           str(cluster.tftp), "--json"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    (release,) = releases(cluster.tftp)
    game = cluster.inventory.cluster.game_log_tag
    view = {n["name"]: n for n in json.loads(done.stdout)["hosts"]}
    for host in hosts:
        node = view[host.name]
        assert (node["state"], node["build"], node["release"]) == (
            "current", cluster.build_id, release.id), node
        assert node["last_error"]["line"] == f"{game}: {GAME_ERROR}", node


def test_nfs_server_comes_while_the_node_retries(cluster: Cluster) -> None:
    for start in (cluster.start_dhcpd, cluster.start_tftpd, cluster.start_rsyslogd):
        start()
    host = cluster.inventory.hosts[0]
    cluster.boot_node(host, 0)
    cluster.wait_log(f"{host.name}.log", " failed, attempt 1 of 10: ", BOOT_TIMEOUT)
    cluster.start_ganesha()
    cluster.wait_log(f"{host.name}.log", "master: heartbeat 1", RETRIES_TIMEOUT)
    assert_node_up(cluster, host)
    mounted = re.search(r"bootlocal: mounted .* attempt (\d+)$", cluster.log(f"{host.name}.log"),
                        re.M)
    assert mounted and int(mounted[1]) > 1


def test_nfs_server_never_comes(cluster: Cluster) -> None:
    for start in (cluster.start_dhcpd, cluster.start_tftpd, cluster.start_rsyslogd):
        start()
    host, c = cluster.inventory.hosts[0], cluster.inventory.cluster
    cluster.boot_node(host, 0)
    cluster.wait_log(f"{host.name}-err.log", "giving up", BOOT_TIMEOUT + RETRIES_TIMEOUT)
    share = f"{c.nfs_server}:{c.nfs_export}"
    assert lines(cluster.log(f"{host.name}-err.log")) == [
        f"{c.game_log_tag}: bootlocal: giving up on {share} (at most 10 attempts): "
        "game server not started"]
    log = lines(cluster.log(f"{host.name}.log"))
    assert sum(f"bootlocal: mounting {share} on {c.nfs_mountpoint} failed, attempt" in m
               for m in log) == 10
    assert not any(m.startswith(f"{c.game_log_tag}: game server up") for m in log)


def test_log_host_down_at_boot(cluster: Cluster) -> None:
    for start in (cluster.start_dhcpd, cluster.start_tftpd, cluster.start_ganesha):
        start()
    host = cluster.inventory.hosts[0]
    node = cluster.boot_node(host, 0)
    # Only the node's console can tell when its game server has started: nobody else listens.
    cluster.wait_console(node, f"{cluster.inventory.cluster.game_log_tag}: heartbeat 1",
                         BOOT_TIMEOUT)
    assert str(host.ip) in cluster.nfs_clients()
    cluster.start_rsyslogd()  # the log host comes back: the game server is there, running
    cluster.wait_log(f"{host.name}.log", "master: heartbeat", 30)
    log = cluster.log(f"{host.name}.log")
    assert "bootlocal: starting" not in log  # said while nobody listened
    assert not (cluster.logs / f"{host.name}-err.log").exists()
