"""dhcpd, Kea and dnsmasq: the generated configs proven by the daemons, live, and Kea's HA.

Syntax: `kea-dhcp4 -t`, `dnsmasq --test` and `dhcpd -t` accept the configs of every inventory
variant (the example, no domain, HTTP boot, a boot-server pair, no node yet). Live (root;
namespaces from tests/kit/netns.py): dhcpd, Kea, then dnsmasq serve the two-NIC node of
tests/kit/dhcplab.py, which must come up as the inventory says under each. High availability: a Kea
hot-standby pair on one bridge; the primary is killed with SIGKILL and the standby serves the
next node and a rebooting one.
"""

from __future__ import annotations

import json
import re
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tcbuild.boot.bootfile import PXELINUX
from tcbuild.bootserver.dnsmasq import inlined
from tcbuild.bootserver.files import Dhcp, server_files
from tcbuild.bootserver.kea import kea_files
from tcbuild.config.inventory import Inventory

from .kit.dhcplab import (
    acknowledged,
    check_node,
    kea_json,
    recipe_inventory,
    require_dhclient,
    server_identifier,
    start_dhcp_server,
    start_kea,
    two_nic_node,
)
from .kit.netns import Lab, run, wait_for
from .kit.requires import require_tool

PAIR = ("10.1.1.1", "10.1.1.2")


def variant(name: str) -> Inventory:
    """The recipe's inventory, or one of the variants that take another branch of a config."""
    inventory = recipe_inventory()
    c = inventory.cluster
    if name == "no-hosts":  # a cluster before its first node
        return replace(inventory, hosts=())
    changes: dict[str, Any] = {
        "example": {},
        "no-domain": {"domain": ""},
        "http": {"http_url": "http://10.1.1.1:8080/boot/"},
        "pair": {"boot_servers": tuple(map(type(c.boot_server), PAIR)),
                 "http_url": "http://10.1.1.1/"},
    }[name]
    return replace(inventory, cluster=replace(c, **changes))


VARIANTS = ["example", "no-domain", "http", "pair", "no-hosts"]


# -- syntax: the daemons' own checks (no root needed) ---------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_the_daemons_accept_every_generated_dhcp_config(tmp_path: Path, name: str) -> None:
    require_tool("kea-dhcp4", "kea-dhcp4-server")
    require_tool("dnsmasq", "dnsmasq-base")
    require_tool("dhcpd", "isc-dhcp-server")
    files = server_files(variant(name), list(Dhcp))
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    kea = [f for f in files if f.startswith("kea-")]
    assert kea == (["kea-dhcp4-primary.conf", "kea-dhcp4-standby.conf"] if name == "pair"
                   else ["kea-dhcp4.conf"])
    for file in kea:
        result = run("kea-dhcp4", "-t", tmp_path / file, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "dnsmasq.conf").write_text(inlined(*(files[f"dnsmasq{part}"] for part in (
        ".conf", "-hosts", "-opts"))))
    for main in ("dnsmasq.conf", "dnsmasq-proxy.conf"):
        for extra in ([], [f"--conf-file={tmp_path / 'dnsmasq-tftp.conf'}"]):
            result = run("dnsmasq", "--test", f"--conf-file={tmp_path / main}", *extra,
                         check=False)
            assert result.returncode == 0 and "syntax check OK" in result.stderr, result.stderr
    result = run("dhcpd", "-t", "-cf", tmp_path / "dhcpd.conf", check=False)
    assert result.returncode == 0, result.stderr


def test_the_daemons_refuse_a_broken_value(tmp_path: Path) -> None:
    """A bad MAC (no Inventory can hold one: written into the text by hand) stops Kea and
    dnsmasq too."""
    require_tool("kea-dhcp4", "kea-dhcp4-server")
    require_tool("dnsmasq", "dnsmasq-base")
    inventory = recipe_inventory()
    good = inventory.hosts[1].mac
    files = {name: text.replace(good, "52:54:00:12:34:5g") for name, text in
             server_files(inventory, [Dhcp.KEA, Dhcp.DNSMASQ]).items()}
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    kea = run("kea-dhcp4", "-t", tmp_path / "kea-dhcp4.conf", check=False)
    assert kea.returncode == 1 and "52:54:00:12:34:5g" in kea.stdout + kea.stderr
    # dnsmasq's check does not read its per-node files: tcbuild checks them written in.
    text = inlined(files["dnsmasq.conf"], files["dnsmasq-hosts"], files["dnsmasq-opts"])
    (tmp_path / "dnsmasq.conf").write_text(text)
    dnsmasq = run("dnsmasq", "--test", f"--conf-file={tmp_path / 'dnsmasq.conf'}",
                  check=False)
    line = 1 + text.splitlines().index(
        "dhcp-host=52:54:00:12:34:5g,set:host-server2,10.1.1.6,server2")
    assert dnsmasq.returncode == 1
    assert f"bad hex constant at line {line} of {tmp_path / 'dnsmasq.conf'}" in dnsmasq.stderr


def test_ha_pair_configs_name_each_other() -> None:
    inventory = variant("pair")
    configs = {name: kea_json(text) for name, text in kea_files(inventory).items()}
    assert list(configs) == ["kea-dhcp4-primary.conf", "kea-dhcp4-standby.conf"]
    for (name, config), me, address in zip(configs.items(), ["primary", "standby"], PAIR,
                                           strict=True):
        dhcp4 = config["Dhcp4"]
        assert dhcp4["subnet4"][0]["next-server"] == address, name  # TFTP from whoever answers
        libraries = [h["library"].rsplit("/", 1)[1] for h in dhcp4["hooks-libraries"]]
        assert libraries == ["libdhcp_lease_cmds.so", "libdhcp_ha.so"]
        [ha] = dhcp4["hooks-libraries"][1]["parameters"]["high-availability"]
        assert ha["this-server-name"] == me and ha["mode"] == "hot-standby"
        assert [(p["name"], p["url"], p["role"]) for p in ha["peers"]] == [
            ("primary", "http://10.1.1.1:8001/", "primary"),
            ("standby", "http://10.1.1.2:8001/", "standby")]
    primary, standby = (json.dumps(c, sort_keys=True) for c in configs.values())
    differences = {a for a, b in zip(primary.split(","), standby.split(","), strict=True)
                   if a != b}
    assert len(differences) == 2  # this-server-name and next-server, nothing else


# -- live: network namespaces (root) ---------------------------------------------------------


def boot_network(lab: Lab, inventory: Inventory, servers: int) -> tuple[str, list[str]]:
    """A bridge namespace (the internal network) and `servers` boot-server namespaces on it."""
    c = inventory.cluster
    switch = lab.namespace("switch")
    lab.ip(switch, "link", "add", "br0", "type", "bridge")
    lab.interfaces.add("br0")
    lab.ip(switch, "link", "set", "br0", "up")
    namespaces = []
    for i, address in enumerate(c.boot_servers[:servers]):
        boot = lab.namespace(f"boot{i}")
        lab.link(switch, f"sw-boot{i}", boot, "int0")
        lab.ip(switch, "link", "set", f"sw-boot{i}", "master", "br0")
        lab.ip(boot, "addr", "add", f"{address}/{c.internal_subnet.prefixlen}", "dev", "int0")
        namespaces.append(boot)
    return switch, namespaces


def plug(lab: Lab, switch: str, port: str) -> None:
    lab.ip(switch, "link", "set", port, "master", "br0")


@pytest.mark.parametrize("server", list(Dhcp))
def test_live_dhcp(tmp_path: Path, lab: Lab, server: Dhcp) -> None:
    """dhcpd / Kea / dnsmasq -> dhclient + the image's exit hook, for every node of the example.

    Address, second IP, route, hostname, lease and NRPE as the inventory says; the server's log
    names the node's address and MAC.
    """
    require_dhclient()
    inventory = recipe_inventory()
    switch, [boot] = boot_network(lab, inventory, 1)
    daemon = start_dhcp_server(lab, boot, server, inventory, tmp_path, "int0")
    for i, host in enumerate(inventory.hosts):
        node = two_nic_node(lab, inventory, host, switch, f"sw-node{i}", tmp_path / host.name)
        plug(lab, switch, f"sw-node{i}")
        check_node(lab, node, node.dhclient(lab), inventory, PXELINUX)
        assert server_identifier(node) == str(inventory.cluster.boot_server)
        assert acknowledged(server, daemon, host, "int0"), daemon.output()


FAILOVER_TIMEOUT = 60.0  # the standby's takeover plus the node's own DHCP retry schedule


@pytest.mark.parametrize("unplug", [False, True], ids=["kill", "kill-and-unplug"])
def test_kea_hot_standby_failover(tmp_path: Path, lab: Lab, unplug: bool) -> None:
    """Two Kea servers on one bridge; kill -9 the primary; the standby serves the nodes.

    Node 1 boots while both run: the primary answers, the standby learns the lease through the
    HA hook's own listener (no kea-ctrl-agent runs). Then the primary is killed: its process
    only (its host still refuses the heartbeat's connections at once), or with its cable pulled
    too, as when the machine dies (the heartbeat then times out). Node 2 boots for the first
    time and node 1 reboots: both are answered by the standby, with everything the inventory
    gives them. The failover times are printed (pytest -s) for the README.
    """
    require_dhclient()
    inventory = variant("pair")
    switch, boots = boot_network(lab, inventory, 2)
    files = kea_files(inventory)
    primary, standby = (
        start_kea(lab, boot, role, files[f"kea-dhcp4-{role}.conf"], tmp_path / role)
        for boot, role in zip(boots, ["primary", "standby"], strict=True))
    for kea, partner in ((primary, "standby"), (standby, "primary")):
        wait_for(lambda kea=kea: re.search(r"HA_STATE_TRANSITION .* to HOT-STANDBY state",
                                           kea.output()) is not None,
                 f"{kea.name} in hot-standby with its partner", timeout=FAILOVER_TIMEOUT,
                 watch=[primary, standby])
        assert partner in kea.output()
    assert "kea-ctrl-agent" not in run("ps", "-eo", "comm").stdout.split()

    one, two = (two_nic_node(lab, inventory, host, switch, f"sw-node{i}", tmp_path / host.name)
                for i, host in enumerate(inventory.hosts[:2]))
    plug(lab, switch, "sw-node0")
    first = one.dhclient(lab)
    check_node(lab, one, first, inventory, PXELINUX)
    assert server_identifier(one) == PAIR[0]
    assert "DHCP4_LEASE_ALLOC" not in standby.output()  # hot standby: it only listens
    wait_for(lambda: f"{one.host.ip}," in (tmp_path / "standby/leases4.csv").read_text(),
             "the standby to hold node 1's lease", watch=[standby])

    if unplug:
        lab.ip(switch, "link", "set", "sw-boot0", "down")
    primary.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    primary.process.wait()
    plug(lab, switch, "sw-node1")
    second = two.dhclient(lab)
    wait_for(lambda: "to PARTNER-DOWN state" in standby.output(), "the standby to take over",
             timeout=FAILOVER_TIMEOUT, watch=[standby])
    takeover = time.monotonic() - killed
    wait_for(lambda: f"bound to {two.host.ip} " in second.output(), "node 2's lease",
             timeout=FAILOVER_TIMEOUT, watch=[standby, second])
    served = time.monotonic() - killed
    check_node(lab, two, second, inventory, PXELINUX)
    assert server_identifier(two) == PAIR[1]

    first.stop()  # node 1 reboots: it asks again for the address it had
    rebooted = one.dhclient(lab)
    check_node(lab, one, rebooted, inventory, PXELINUX)
    assert server_identifier(one) == PAIR[1]
    print(f"\nKea hot-standby failover ({'kill -9 + unplug' if unplug else 'kill -9'} of the "
          f"primary): standby in partner-down after {takeover:.1f} s, a booting node's lease "
          f"after {served:.1f} s")
