"""`enroll` and `retire`: names and addresses allocated, the inventory rewritten keeping its
layout, and the boot server's configs put live in the real daemons (Kea through its control
socket, dnsmasq by SIGHUP) without a restart; a refused config leaves everything as it was."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tcbuild.bootserver.apply import Installed
from tcbuild.bootserver.files import Dhcp, server_files
from tcbuild.config.allocate import Allocator, Request, plan_hosts
from tcbuild.config.discovery import parse_range
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.errors import InputError, TcbuildError
from tcbuild.stages.enroll import ApplyOptions, enroll, enroll_many, retire

from .kit.dhcplab import (
    acknowledged,
    check_node,
    dnsmasq_files,
    require_dhclient,
    start_kea,
    two_nic_node,
)
from .kit.netns import Lab
from .kit.requires import require_tool
from .test_dhcp_servers import boot_network, plug

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples/cluster.toml"
PXELINUX = "pxelinux.0"


def copy(tmp_path: Path, extra: str = "", text: str | None = None) -> Path:
    path = tmp_path / "cluster.toml"
    text = EXAMPLE.read_text() if text is None else text
    path.write_text(text.replace("[cluster]\n", f"[cluster]\n{extra}", 1))
    return path


def tcbuild(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


# -- planning -------------------------------------------------------------------------------

def test_the_next_name_and_addresses_follow_the_highest_used() -> None:
    inventory = load_inventory(EXAMPLE)
    [host] = plan_hosts(inventory, [Request("52-54-00-AA-BB-CC")])
    assert (host.name, host.mac, str(host.ip), str(host.second_ip)) == (
        "server3", "52:54:00:aa:bb:cc", "10.1.1.7", "172.16.1.7")
    games = dataclasses.replace(inventory, cluster=dataclasses.replace(
        inventory.cluster, name_pattern="game{n}x"))
    several = plan_hosts(games, [Request("52:54:00:00:00:01"), Request("52:54:00:00:00:02")])
    assert [(h.name, str(h.ip)) for h in several] == [("game1x", "10.1.1.7"),
                                                      ("game2x", "10.1.1.8")]


def test_allocation_skips_what_is_not_free() -> None:
    inventory = load_inventory(EXAMPLE)
    c = inventory.cluster
    # Hosts up to .199, the discovery range .200-.250, the router at .254: .251 is next.
    hosts = tuple(dataclasses.replace(inventory.hosts[0], name=f"n{i}",
                                      mac=f"52:54:00:00:01:{i:02x}", ip=IPv4Address(f"10.1.1.{i}"),
                                      second_ip=IPv4Address(f"172.16.2.{i}"))
                  for i in (5, 199))
    discovery, _ = parse_range("10.1.1.200-10.1.1.250", c.internal_subnet, [])
    crowded = dataclasses.replace(inventory, hosts=hosts, cluster=dataclasses.replace(
        c, internal_router=IPv4Address("10.1.1.254"), discovery=discovery))
    found = [str(h.ip) for h in plan_hosts(crowded, [Request(f"52:54:00:00:02:0{i}")
                                                         for i in range(4)])]
    # .251 .252 .253, then (the router, broadcast) back to the first gap: .2 (.1 is the boot server)
    assert found == ["10.1.1.251", "10.1.1.252", "10.1.1.253", "10.1.1.2"]
    with pytest.raises(InputError, match=r"^ip 10\.1\.1\.210: inside the discovery range "
                                         r"10\.1\.1\.200-10\.1\.1\.250$"):
        plan_hosts(crowded, [Request("52:54:00:00:02:09", ip="10.1.1.210")])


def test_a_full_network_and_taken_values_are_bad_input() -> None:
    inventory = load_inventory(EXAMPLE)
    tiny = dataclasses.replace(inventory, hosts=inventory.hosts[:1], cluster=dataclasses.replace(
        inventory.cluster, external_network=IPv4Network("172.16.1.4/30"),
        external_gateway=IPv4Address("172.16.1.6")))
    with pytest.raises(InputError, match=r"^second_ip: the external network 172\.16\.1\.4/30 "
                                         r"has no free address left"):
        plan_hosts(tiny, [Request("52:54:00:00:00:09")])
    allocator = Allocator(inventory)
    for request, message in [
            (Request("52:54:00:12:34:5"), "'52:54:00:12:34:5' is not a MAC address"),
            (Request("01:00:5e:00:00:01"), "01:00:5e:00:00:01 is a multicast address"),
            (Request("52:54:00:12:34:56"), "MAC 52:54:00:12:34:56 is already host server1's"),
            (Request("52:54:00:00:00:09", name="SERVER1"), "name SERVER1 is already taken"),
            (Request("52:54:00:00:00:09", name="game_1"),  # the inventory's own rule and words
             "name 'game_1' is not a valid host name (a DNS label: letters, digits and inner "
             "hyphens, at most 63)"),
            (Request("52:54:00:00:00:09", ip="10.1.1.6"), "ip 10.1.1.6: already used by host "
                                                          "server2"),
            (Request("52:54:00:00:00:09", ip="10.1.1.1"), "ip 10.1.1.1: already used by a "
                                                          "boot server"),
            (Request("52:54:00:00:00:09", second_ip="172.16.1.1"), "already used by the "
                                                                   "external gateway"),
            (Request("52:54:00:00:00:09", second_ip="172.16.255.255"), "the network or "
                                                                       "broadcast address"),
            (Request("52:54:00:00:00:09", group="nope"), "group 'nope' is not in the inventory")]:
        with pytest.raises(InputError) as raised:
            allocator.take(request)
        assert message in str(raised.value) and len(raised.value.lines) == 1, raised.value


# -- the inventory file ---------------------------------------------------------------------

def test_enroll_adds_only_a_table_and_retire_takes_it_away(tmp_path: Path) -> None:
    path = copy(tmp_path, extra="# the pool's names\nname_pattern = \"node{n}\"\n")
    before = path.read_text()
    changed = enroll(path, "52:54:00:aa:bb:cc", group="canary")
    after = path.read_text()
    assert after == before + ('\n[[host]]\nname      = "node1"\nmac       = "52:54:00:aa:bb:cc"\n'
                              'ip        = "10.1.1.7"\nsecond_ip = "172.16.1.7"\n'
                              'group     = "canary"\n')
    assert "# the internal NIC (eth1), which PXE-boots" in after
    assert [h.name for h in changed.hosts] == ["node1"]
    assert [h.name for h in load_inventory(path).hosts] == ["server1", "server2", "node1"]
    retire(path, "node1")
    assert path.read_text() == before
    retire(path, "server1")  # a table in the middle goes with its comment, nothing else
    assert path.read_text() == before.replace(
        '[[host]]\nname      = "server1"\nmac       = "52:54:00:12:34:56"          # the internal '
        'NIC (eth1), which PXE-boots\nip        = "10.1.1.5"\nsecond_ip = "172.16.1.5"\n\n', "")


def test_several_machines_are_one_write(tmp_path: Path) -> None:
    path = copy(tmp_path)
    changed = enroll_many(path, [Request("52:54:00:00:00:0a"), Request("52:54:00:00:00:0b")])
    assert [(h.name, str(h.second_ip)) for h in changed.hosts] == [("server3", "172.16.1.7"),
                                                                   ("server4", "172.16.1.8")]
    assert path.read_text().count("[[host]]") == 4


def test_what_the_reader_refuses_is_never_written(tmp_path: Path) -> None:
    path = copy(tmp_path)
    before = path.read_text()
    result = tcbuild("enroll", "52:54:00:00:00:0a", "--inventory", path, "--bmc", "ipmi://x_y")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"{path}: host[2].bmc: 'ipmi://x_y' is not a BMC address like "
                             "'ipmi://10.1.2.5' or 'ipmi://10.1.2.5:623' (IPMI over LAN)\n")
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.toml"]  # no temp file left


# -- live: the daemons take the new configs (root, namespaces) --------------------------------

def kea_places(workdir: Path) -> Installed:
    return Installed(kea_conf=workdir / "kea-dhcp4.conf", kea_socket=workdir / "kea4-ctrl-socket",
                     kea_leases=workdir / "leases4.csv")


def kea_socket_answer(places: Installed) -> str:
    """Kea still answers on its socket (it kept its running config)."""
    from tcbuild.bootserver.apply import kea_command

    assert places.kea_socket is not None
    return json.dumps(kea_command(places.kea_socket, "config-get"))


def test_kea_takes_a_new_host_live(tmp_path: Path, lab: Lab) -> None:
    """Kea runs the inventory without server2; `enroll --apply kea` adds it through the control
    socket: the same process serves server2 its reservation, and server1 its lease again."""
    require_dhclient()
    path = copy(tmp_path)
    retire(path, "server2")
    full = load_inventory(EXAMPLE)
    inventory = load_inventory(path)
    switch, [boot] = boot_network(lab, inventory, 1)
    kea = start_kea(lab, boot, "kea", server_files(inventory, [Dhcp.KEA])["kea-dhcp4.conf"],
                    tmp_path / "kea")
    kea.wait_for_output("DHCP4_STARTED")
    pid = kea.pid
    first = two_nic_node(lab, full, full.hosts[0], switch, "sw-node0", tmp_path / "server1")
    plug(lab, switch, "sw-node0")
    check_node(lab, first, first.dhclient(lab), full, PXELINUX)

    result = tcbuild("enroll", "52:54:00:12:34:57", "--inventory", path, "--name", "server2",
                     "--group", "canary", "--apply", "kea", "--no-rsyslog",
                     "--kea-conf", tmp_path / "kea/kea-dhcp4.conf",
                     "--kea-socket", tmp_path / "kea/kea4-ctrl-socket",
                     "--kea-leases", tmp_path / "kea/leases4.csv", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["applied"] == ["kea"]
    assert kea.pid == pid and kea.process.poll() is None
    assert "52:54:00:12:34:57" in (tmp_path / "kea/kea-dhcp4.conf").read_text()
    second = two_nic_node(lab, full, full.hosts[1], switch, "sw-node1", tmp_path / "server2")
    plug(lab, switch, "sw-node1")
    check_node(lab, second, second.dhclient(lab), full, PXELINUX)
    check_node(lab, first, first.dhclient(lab), full, PXELINUX)  # its lease, served again
    assert acknowledged(Dhcp.KEA, kea, full.hosts[1], "int0")
    assert kea.pid == pid


def test_a_refused_or_unreachable_kea_changes_nothing(tmp_path: Path, lab: Lab) -> None:
    """Kea cannot take the new config (its lease file's directory is missing: config-test
    passes, config-set fails) -> exit 1, one line, the inventory and Kea's file as they were,
    Kea running; no socket -> the same."""
    path = copy(tmp_path)
    inventory = load_inventory(path)
    _, [boot] = boot_network(lab, inventory, 1)
    kea = start_kea(lab, boot, "kea", server_files(inventory, [Dhcp.KEA])["kea-dhcp4.conf"],
                    tmp_path / "kea")
    kea.wait_for_output("DHCP4_STARTED")
    conf = tmp_path / "kea/kea-dhcp4.conf"
    before = path.read_text(), conf.read_text()
    places = kea_places(tmp_path / "kea")
    # A lease file Kea cannot open: config-set fails once Kea's file is written.
    refused = dataclasses.replace(places, kea_leases=tmp_path / "no/such/dir/leases.csv")
    with pytest.raises(TcbuildError) as raised:
        enroll(path, "52:54:00:00:00:0a", apply_options=ApplyOptions(Dhcp.KEA, refused, False))
    assert raised.value.exit_code == 1 and len(raised.value.lines) == 1
    assert str(raised.value).startswith(f"Kea did not take the new config ({places.kea_socket}: "
                                        "config-set: ")
    assert str(raised.value).endswith(f"; {conf} is as it was")
    assert (path.read_text(), conf.read_text()) == before
    gone = dataclasses.replace(places, kea_socket=tmp_path / "nowhere.sock")
    result = tcbuild("enroll", "52:54:00:00:00:0a", "--inventory", path, "--apply", "kea",
                     "--no-rsyslog", "--kea-conf", conf, "--kea-socket", gone.kea_socket or "",
                     "--kea-leases", places.kea_leases or "")
    assert result.returncode == 1
    assert result.stderr == (f"Kea's control socket {tmp_path / 'nowhere.sock'}: No such file "
                             "or directory\n")
    assert (path.read_text(), conf.read_text()) == before
    assert kea.process.poll() is None
    assert json.loads(kea_socket_answer(places))["result"] == 0


def test_dnsmasq_rereads_its_hosts_on_sighup(tmp_path: Path, lab: Lab) -> None:
    """dnsmasq serves server1 only; `enroll --apply dnsmasq` writes its hosts and options files
    and sends SIGHUP: the same process serves server2."""
    require_dhclient()
    require_tool("dnsmasq", "dnsmasq-base")
    path = copy(tmp_path)
    retire(path, "server2")
    full = load_inventory(EXAMPLE)
    inventory = load_inventory(path)
    switch, [boot] = boot_network(lab, inventory, 1)
    work = tmp_path / "dnsmasq"
    work.mkdir()
    conf = dnsmasq_files(server_files(inventory, [Dhcp.DNSMASQ]), work)
    daemon = lab.start(boot, "dnsmasq", [
        "dnsmasq", "--keep-in-foreground", "--log-dhcp", "--log-facility=-",
        f"--conf-file={conf}", f"--dhcp-leasefile={work / 'leases'}",
        f"--pid-file={work / 'dnsmasq.pid'}", "--user=root"])
    daemon.wait_for_output("DHCP, static leases only on")
    pid = daemon.pid
    result = tcbuild("enroll", "52:54:00:12:34:57", "--inventory", path, "--name", "server2",
                     "--group", "canary", "--apply", "dnsmasq", "--no-rsyslog",
                     "--dnsmasq-hosts", work / "dnsmasq-hosts", "--dnsmasq-opts",
                     work / "dnsmasq-opts", "--dnsmasq-pid", work / "dnsmasq.pid")
    assert result.returncode == 0, result.stderr
    daemon.wait_for_output("read " + str(work / "dnsmasq-hosts"))
    second = two_nic_node(lab, full, full.hosts[1], switch, "sw-node1", tmp_path / "server2")
    plug(lab, switch, "sw-node1")
    check_node(lab, second, second.dhclient(lab), full, PXELINUX)
    assert daemon.pid == pid and daemon.process.poll() is None


def test_dhcpd_is_checked_then_restarted_and_a_failed_restart_is_undone(tmp_path: Path) -> None:
    """dhcpd: `dhcpd -t` then the restart command; a failing restart puts the old file back
    (and restarts with it), the inventory unchanged."""
    require_tool("dhcpd", "isc-dhcp-server")
    path = copy(tmp_path)
    conf = tmp_path / "dhcpd.conf"
    conf.write_text("# the running config\n")
    log = tmp_path / "restarts"
    ok = Installed(dhcpd_conf=conf, dhcpd_restart=("sh", "-c", f"echo restart >> {log}"))
    changed = enroll(path, "52:54:00:00:00:0a", apply_options=ApplyOptions(Dhcp.ISC, ok, False))
    assert changed.applied == ("dhcpd",)
    assert "hardware ethernet 52:54:00:00:00:0a;" in conf.read_text()
    assert log.read_text() == "restart\n"
    before = path.read_text(), conf.read_text()
    failing = dataclasses.replace(ok, dhcpd_restart=(
        "sh", "-c", f"echo restart >> {log}; grep -q 00:0b {conf} && exit 3 || exit 0"))
    with pytest.raises(TcbuildError) as raised:
        enroll(path, "52:54:00:00:00:0b", apply_options=ApplyOptions(Dhcp.ISC, failing, False))
    assert raised.value.exit_code == 1
    assert str(raised.value).startswith("dhcpd: sh -c ")
    assert str(raised.value).endswith(f"exited 3: no output; the previous {conf} is back, "
                                      "restarted with")
    assert (path.read_text(), conf.read_text()) == before
    assert log.read_text() == "restart\n" * 3


def test_tftp_gets_the_hosts_config_and_loses_it_on_retire(site: Path) -> None:
    """--tftp: a canary host boots what `default` boots, with the group's line; a host without
    power control is to be rebooted; retire removes the config and its iPXE twin."""
    tftp = site / "tftp"
    published = tcbuild("publish", site / "recipes/gameserver.toml", "--tftp", tftp, "--cache",
                        site / "cache", "--bootloader-dir", site / "bootloader", "--out",
                        site / "out", "--quiet")
    assert published.returncode == 0, published.stderr
    inventory = site / "examples/cluster.toml"
    result = tcbuild("enroll", "52:54:00:aa:bb:cc", "--inventory", inventory, "--group",
                     "canary", "--tftp", tftp, "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    config = tftp / "pxelinux.cfg/01-52-54-00-aa-bb-cc"
    assert shown["configs"] == [str(config)]
    assert shown["power"] == ["server3: no BMC or power_command; reboot it to boot as server3"]
    default = (tftp / "pxelinux.cfg/default").read_text()
    canary = load_inventory(inventory).groups["canary"].append
    assert canary is not None and f"APPEND {canary}\n" in config.read_text()
    assert config.read_text().split("APPEND")[0] == default.split("APPEND")[0]
    assert (tftp / "ipxe/01-52-54-00-aa-bb-cc.ipxe").is_file()
    verified = tcbuild("verify", "--tftp", tftp, "--inventory", inventory)
    assert verified.returncode == 0, verified.stderr
    assert tcbuild("retire", "server3", "--inventory", inventory, "--tftp", tftp).returncode == 0
    assert not config.exists() and not (tftp / "ipxe/01-52-54-00-aa-bb-cc.ipxe").exists()
