"""Discovery in the DHCP configs: a machine the inventory does not know gets a short lease from
the discovery range and option 209 naming `pxelinux.cfg/discovery`; a known one is unchanged.

Without a range the configs are byte for byte what they were (goldens in
tests/data/dhcp-golden, header aside). With one, each daemon's own check accepts them, and live
(root, namespaces): dhcpd, Kea and dnsmasq answer an unknown MAC from the range with option 209
sent unasked (the node's dhclient.conf does not request it, as a PXE ROM does not), and still
give a known node its fixed address and everything else the inventory says.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tcbuild.boot.bootfile import PXELINUX
from tcbuild.bootserver.files import Dhcp, server_files
from tcbuild.config.discovery import LEASE_SECONDS, parse_range
from tcbuild.config.inventory import Host, Inventory
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.fleet import leases

from .kit.dhcplab import (
    check_node,
    kea_json,
    last_lease,
    recipe_inventory,
    require_dhclient,
    start_dhcp_server,
    two_nic_node,
)
from .kit.netns import Lab, run, wait_for
from .kit.requires import require_tool

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests/data/dhcp-golden"
RANGE = "10.1.1.200-10.1.1.250"
UNKNOWN_MAC = "52:54:00:d2:3d:01"


def with_discovery(inventory: Inventory, http_url: str | None = None) -> Inventory:
    found, problem = parse_range(RANGE, inventory.cluster.internal_subnet, [])
    assert found is not None, problem
    changes = {"discovery": found} | ({"http_url": http_url} if http_url else {})
    return replace(inventory, cluster=replace(inventory.cluster, **changes))


def example(http: bool) -> Inventory:
    inventory = load_inventory(ROOT / "examples/cluster.toml")
    if http:
        inventory = replace(inventory, cluster=replace(inventory.cluster,
                                                       http_url="http://10.1.1.1/"))
    return inventory


@pytest.mark.parametrize("http", [False, True], ids=["example", "http"])
def test_without_a_range_the_configs_are_as_before(http: bool) -> None:
    files = server_files(example(http), list(Dhcp))
    compared = 0
    for name, text in files.items():
        golden = GOLDEN / f"{'http' if http else 'example'}-{name}"
        if golden.exists():
            assert "".join(text.splitlines(keepends=True)[2:]) == golden.read_text(), name
            compared += 1
    assert compared == 5


def test_the_range_reaches_every_config() -> None:
    files = server_files(with_discovery(example(True)), list(Dhcp))
    dhcpd = files["dhcpd.conf"]
    assert "option pxelinux-configfile code 209 = text;" in dhcpd
    pool = dhcpd[dhcpd.index("    pool {"):]
    assert "range 10.1.1.200 10.1.1.250;\n        deny known-clients;" in pool
    assert f"default-lease-time {LEASE_SECONDS};" in pool
    assert 'filename "http://10.1.1.1/ipxe/discovery.ipxe";' in pool
    assert pool.index("    }\n}") < dhcpd.index("host server1 {")  # inside the subnet
    kea = kea_json(files["kea-dhcp4.conf"])["Dhcp4"]
    assert kea["subnet4"][0]["pools"] == [{"pool": "10.1.1.200 - 10.1.1.250",
                                          "client-class": "UNKNOWN"}]
    classes = {c["name"]: c for c in kea["client-classes"]}
    assert classes["discovery"]["valid-lifetime"] == LEASE_SECONDS
    assert classes["discovery"]["option-data"][0]["data"] == "pxelinux.cfg/discovery"
    assert classes["discovery-ipxe"]["boot-file-name"] == "http://10.1.1.1/ipxe/discovery.ipxe"
    assert classes["ipxe"]["test"].startswith("member('KNOWN') and ")
    dnsmasq = files["dnsmasq.conf"].splitlines()
    assert "dhcp-range=tag:!known,10.1.1.200,10.1.1.250,255.255.255.0,300" in dnsmasq
    assert 'dhcp-option-force=tag:!known,209,"pxelinux.cfg/discovery"' in dnsmasq
    assert not any("gets none." in line for line in dnsmasq)  # the comment says discovery
    boots = [line for line in dnsmasq if line.startswith("dhcp-boot=")]
    assert boots[0] == "dhcp-boot=tag:ipxe,tag:!known,http://10.1.1.1/ipxe/discovery.ipxe"


@pytest.mark.parametrize("http", [False, True], ids=["example", "http"])
def test_the_daemons_accept_the_discovery_configs(tmp_path: Path, http: bool) -> None:
    require_tool("kea-dhcp4", "kea-dhcp4-server")
    require_tool("dnsmasq", "dnsmasq-base")
    require_tool("dhcpd", "isc-dhcp-server")
    files = server_files(with_discovery(example(http)), list(Dhcp))
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    kea = run("kea-dhcp4", "-t", tmp_path / "kea-dhcp4.conf", check=False)
    assert kea.returncode == 0, kea.stdout + kea.stderr
    dnsmasq = run("dnsmasq", "--test", f"--conf-file={tmp_path / 'dnsmasq.conf'}", check=False)
    assert dnsmasq.returncode == 0 and "syntax check OK" in dnsmasq.stderr, dnsmasq.stderr
    dhcpd = run("dhcpd", "-t", "-cf", tmp_path / "dhcpd.conf", check=False)
    assert dhcpd.returncode == 0, dhcpd.stderr


@pytest.mark.parametrize("server", list(Dhcp))
def test_live_an_unknown_machine_gets_a_discovery_lease(tmp_path: Path, lab: Lab,
                                                        server: Dhcp) -> None:
    require_dhclient()
    inventory = with_discovery(recipe_inventory())
    c = inventory.cluster
    assert c.discovery is not None
    switch = lab.namespace("d23-switch")
    lab.bridge(switch, "192.0.2.254/32")  # the internal network; its own address unused
    boot = lab.namespace("d23-boot")
    lab.link(switch, "sw-boot", boot, "int0")
    lab.ip(switch, "link", "set", "sw-boot", "master", "br0")
    lab.ip(boot, "addr", "add", f"{c.boot_server}/{c.internal_subnet.prefixlen}", "dev", "int0")
    daemon = start_dhcp_server(lab, boot, server, inventory, tmp_path, "int0")

    stranger = Host("stranger", UNKNOWN_MAC, IPv4Address("10.1.1.99"),
                    IPv4Address("172.16.1.99"), None)
    node = two_nic_node(lab, inventory, stranger, switch, "sw-new", tmp_path / "stranger")
    lab.ip(switch, "link", "set", "sw-new", "master", "br0")
    client = node.dhclient(lab)
    bound = re.compile(r"bound to (\d+\.\d+\.\d+\.\d+) ")
    wait_for(lambda: bound.search(client.output()) is not None, "the unknown machine's lease",
             watch=[daemon, client])
    found = bound.search(client.output())
    assert found is not None
    assert IPv4Address(found[1]) in c.discovery
    lease = last_lease(node.lease_file.read_text())
    assert re.search(r'option loader-configfile "pxelinux\.cfg/discovery";', lease), lease  # 209
    assert f"option dhcp-lease-time {LEASE_SECONDS};" in lease
    assert "second-ip" not in lease  # no public address for a stranger
    assert f'filename "{PXELINUX}";' in lease
    # The server's own lease file, as `fleet` reads it, bears the stranger out (dnsmasq's too).
    records = {Dhcp.ISC: "dhcpd.leases", Dhcp.KEA: "leases4.csv", Dhcp.DNSMASQ: "dnsmasq.leases"}
    now = datetime.now(UTC)
    wait_for(lambda: any(r.held(IPv4Address(found[1]), UNKNOWN_MAC, now) for r in
                         leases.read_leases([tmp_path / server.value / records[server]])),
             f"{records[server]} to record the lease", watch=[daemon])

    host = inventory.hosts[0]  # a known node: its fixed address, as before
    known = two_nic_node(lab, inventory, host, switch, "sw-known", tmp_path / host.name)
    lab.ip(switch, "link", "set", "sw-known", "master", "br0")
    check_node(lab, known, known.dhclient(lab), inventory, PXELINUX)
    assert "loader-configfile" not in last_lease(known.lease_file.read_text())
