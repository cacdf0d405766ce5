"""The whole boot server, end to end: a QEMU node PXE-boots from the real daemons.

In a network namespace of its own the boot server runs a DHCP server with its generated config
(ISC dhcpd, Kea, dnsmasq, or dnsmasq's proxy DHCP beside a site's own DHCP server) and tftpd-hpa
with the options of the generated tftpd-hpa defaults, serving the TFTP root that `tcbuild
publish` filled with the example recipe. QEMU's NIC is a tap device on the bridge that carries
the boot server's address, in that same namespace: QEMU's own DHCP and TFTP take no part. The
node must come up as the inventory says: its fixed address, its per-MAC kernel line, the
published build. Once more with UEFI firmware (OVMF) against dhcpd: its architecture (option
93) gets it bootx64.efi, which reads the same per-MAC config. With two boot servers, the node
boots from the standby once the primary is gone.
Nothing here touches the host's own network (tests/kit/netns.py).
"""

from __future__ import annotations

import re
import shlex
import signal
from pathlib import Path

import pytest

from tcbuild.bootserver.files import Dhcp, server_files
from tcbuild.bootserver.tftpd import tftpd_hpa
from tcbuild.config.inventory import Host, Inventory
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.fleet import boottest
from tcbuild.fleet.boottest import Firmware

from .kit.clusterlab import bound, shell_defaults
from .kit.dhcplab import acknowledged, start_dhcp_server, start_kea
from .kit.netns import Daemon, Lab, wait_for
from .kit.nodekit import BUILD_ID, CANARY, MARKER, kernel_line, publish
from .kit.requires import require_ovmf, require_tool

TFTP_PORT = 69


SITE_RANGE = ("10.1.1.100", "10.1.1.109")  # the site's own DHCP server, for proxy DHCP
PAIR = ("10.1.1.1", "10.1.1.2")


def boot_server(lab: Lab, inventory: Inventory) -> str:
    """The boot server's namespace: its address on a bridge whose port tap0 is QEMU's NIC."""
    c = inventory.cluster
    server = lab.namespace("server")
    lab.ip(server, "link", "add", "br0", "type", "bridge")
    lab.ip(server, "tuntap", "add", "dev", "tap0", "mode", "tap")
    lab.interfaces |= {"br0", "tap0"}
    lab.ip(server, "link", "set", "tap0", "master", "br0")
    lab.ip(server, "addr", "add", f"{c.boot_server}/{c.internal_subnet.prefixlen}", "dev", "br0")
    lab.ip(server, "link", "set", "tap0", "up")
    lab.ip(server, "link", "set", "br0", "up")
    return server


def on_the_bridge(lab: Lab, server: str, role: str, address: str, prefix: int) -> str:
    """Another machine on the boot server's bridge: a namespace with `address` on its eth0."""
    namespace = lab.namespace(role)
    lab.link(server, f"{role}0", namespace, "eth0")
    lab.ip(server, "link", "set", f"{role}0", "master", "br0")
    lab.ip(namespace, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
    return namespace


def start_tftpd(lab: Lab, namespace: str, name: str, inventory: Inventory, tftp: Path) -> Daemon:
    """tftpd-hpa as Debian's init script runs it, with the generated values; only the
    directory is ours."""
    require_tool("in.tftpd", "tftpd-hpa")
    conf = shell_defaults(tftpd_hpa(inventory))
    assert conf["TFTP_DIRECTORY"] == inventory.cluster.tftp_root
    tftpd = lab.start(namespace, name, [
        "in.tftpd", "-L", "--user", conf["TFTP_USERNAME"], "--address", conf["TFTP_ADDRESS"],
        *shlex.split(conf["TFTP_OPTIONS"]), tftp])
    address = conf["TFTP_ADDRESS"].rsplit(":", 1)[0] or "0.0.0.0"
    wait_for(lambda: bound(tftpd, "udp", address, TFTP_PORT), f"{name} listening", watch=[tftpd])
    return tftpd


def start_proxy(lab: Lab, server: str, inventory: Inventory, workdir: Path) -> Daemon:
    """dnsmasq-proxy.conf on the boot server; the addresses from the site's DHCP server.

    That server (ISC dhcpd with a pool and no boot information, as a site's might be) runs
    in a namespace of its own on the same bridge, at the subnet's last address.
    """
    require_tool("dnsmasq", "dnsmasq-base")
    require_tool("dhcpd", "isc-dhcp-server")
    c = inventory.cluster
    subnet = c.internal_subnet
    site = on_the_bridge(lab, server, "site", str(subnet.broadcast_address - 1), subnet.prefixlen)
    conf, leases = workdir / "site-dhcpd.conf", workdir / "site-dhcpd.leases"
    conf.write_text(f"authoritative;\nsubnet {subnet.network_address} netmask {subnet.netmask} "
                    f"{{\n  range {SITE_RANGE[0]} {SITE_RANGE[1]};\n"
                    f"  option routers {c.internal_router};\n}}\n")
    leases.touch()
    dhcpd = lab.start(site, "site-dhcpd", ["dhcpd", "-4", "-f", "-d", "-cf", conf, "-lf", leases,
                                           "-pf", workdir / "site-dhcpd.pid", "eth0"])
    dhcpd.wait_for_output("Server starting service.")
    proxy = workdir / "dnsmasq-proxy.conf"
    proxy.write_text(server_files(inventory, [Dhcp.DNSMASQ])["dnsmasq-proxy.conf"])
    dnsmasq = lab.start(server, "dnsmasq", [
        "dnsmasq", "--keep-in-foreground", "--log-dhcp", "--log-facility=-",
        f"--conf-file={proxy}", f"--pid-file={workdir / 'dnsmasq.pid'}", "--user=root"])
    dnsmasq.wait_for_output("DHCP, proxy on subnet")
    return dnsmasq


def pxe_boot(node: Path, server: str, host: Host, build_id: str, daemons: list[Daemon],
             firmware: Firmware = Firmware.BIOS) -> tuple[str, str]:
    """QEMU as `host`, its NIC on tap0: it must boot the published build and print its marker.

    Returns its console and its firmware's screen; `daemons` must still run afterwards.
    """
    log = (node / "console.log").absolute()
    qemu = boottest.pxe_command(node / "tftp", log, host.mac, firmware=firmware,
                                netdev="tap,id=n0,ifname=tap0,script=no,downscript=no")
    bios = firmware is Firmware.BIOS  # OVMF writes its screen to the console
    result = boottest.watch(["ip", "netns", "exec", server, *qemu], log,
                            MARKER, timeout=120, console_to_log=False,
                            firmware=boottest.firmware_log(log) if bios else None)
    console = log.read_text(errors="replace")
    screen = boottest.CONTROL.sub("", boottest.firmware_log(log).read_text(errors="replace")
                                  if bios else console)
    logs = "".join(f"\n--- {d.name}:\n{d.output()}" for d in daemons)
    assert result.ok, f"{result.reason}\n{result.tail}{logs}"
    assert all(d.process.poll() is None for d in daemons), logs
    found = BUILD_ID.search(console)
    assert found and found[1] == build_id, console[-2000:]
    return console, screen


def assert_own_kernel_line(tftp: Path, host: Host, console: str) -> None:
    """pxelinux read the node's own 01-<mac> config (the canary group's line), not `default`."""
    mine = pxelinux_entry(tftp / "pxelinux.cfg" / ("01-" + host.mac.replace(":", "-")))
    assert mine["APPEND"] != pxelinux_entry(tftp / "pxelinux.cfg/default")["APPEND"]
    assert kernel_line(console).split("Kernel command line: ", 1)[1].strip() == (
        f"BOOT_IMAGE={mine['KERNEL']} {mine['APPEND']} initrd={mine['INITRD']}")


@pytest.mark.parametrize(("dhcp_server", "firmware"), [
    *((d, Firmware.BIOS) for d in [*Dhcp, "proxy"]), (Dhcp.ISC, Firmware.UEFI)],
    ids=[*(str(d) for d in [*Dhcp, "proxy"]), "isc-uefi"])
def test_node_boots_from_the_generated_boot_server(node: Path, lab: Lab, dhcp_server: Dhcp | str,
                                                   firmware: Firmware) -> None:
    if firmware is Firmware.UEFI:
        require_ovmf()
    inventory = load_inventory(node / "examples/cluster.toml")  # the one publish reads
    c = inventory.cluster
    (host,) = [h for h in inventory.hosts if h.mac == CANARY]  # the node QEMU plays
    build_id = publish(node)
    tftp = (node / "tftp").resolve()
    server = boot_server(lab, inventory)
    if isinstance(dhcp_server, Dhcp):
        dhcp = start_dhcp_server(lab, server, dhcp_server, inventory, node, "br0")
    else:
        dhcp = start_proxy(lab, server, inventory, node)
    tftpd = start_tftpd(lab, server, "tftpd", inventory, tftp)
    assert shell_defaults(tftpd_hpa(inventory))["TFTP_ADDRESS"] == f"{c.boot_server}:{TFTP_PORT}"
    console, screen = pxe_boot(node, server, host, build_id, [dhcp, tftpd], firmware)

    # The DHCP server gave the host its fixed address and the boot server (the firmware shows
    # both). ISC dhcpd keeps no lease-file entry for a host with a fixed-address (only pool
    # leases are recorded), so the servers' logs and the firmware's view show the lease.
    # Through proxy DHCP the address is the site server's, any of its pool.
    if isinstance(dhcp_server, Dhcp):
        assert acknowledged(dhcp_server, dhcp, host, "br0"), dhcp.output()
        assert f"net0: {host.ip}/{c.internal_subnet.netmask} gw {c.internal_router}" in screen
        assert f"Next server: {c.boot_server}" in screen
    else:
        assert re.search(rf"PXE\(br0\) {host.mac} proxy", dhcp.output()), dhcp.output()
        leased = re.search(rf"net0: (\S+)/{c.internal_subnet.netmask} gw ", screen)
        assert leased and SITE_RANGE[0] <= leased[1] <= SITE_RANGE[1], screen
    assert f"tftp://{c.boot_server}/{firmware.network_loader}... ok" in screen
    assert_own_kernel_line(tftp, host, console)


def test_node_boots_from_the_standby_when_the_primary_is_gone(node: Path, lab: Lab) -> None:
    """Two boot servers (a Kea hot-standby pair, tftpd-hpa on each, one published tree);
    kea-dhcp4 and tftpd on the primary are killed with SIGKILL; the node PXE-boots from the
    standby: its lease, the standby as next server, its own kernel line, the build."""
    path = node / "examples/cluster.toml"  # the operator's inventory names both servers
    path.write_text(path.read_text().replace(
        "[cluster]\n", f'[cluster]\nboot_servers = ["{PAIR[0]}", "{PAIR[1]}"]\n', 1))
    inventory = load_inventory(path)
    c = inventory.cluster
    (host,) = [h for h in inventory.hosts if h.mac == CANARY]
    build_id = publish(node)
    tftp = (node / "tftp").resolve()
    primary = boot_server(lab, inventory)
    standby = on_the_bridge(lab, primary, "standby", PAIR[1], c.internal_subnet.prefixlen)
    files = server_files(inventory, [Dhcp.KEA])
    keas = [start_kea(lab, namespace, f"kea-{role}", files[f"kea-dhcp4-{role}.conf"],
                      node / f"kea-{role}")
            for namespace, role in ((primary, "primary"), (standby, "standby"))]
    tftpds = [start_tftpd(lab, namespace, f"tftpd-{role}", inventory, tftp)
              for namespace, role in ((primary, "primary"), (standby, "standby"))]
    for kea in keas:
        wait_for(lambda kea=kea: "to HOT-STANDBY state" in kea.output(),
                 f"{kea.name} in hot-standby", timeout=60, watch=keas)

    for daemon in (keas[0], tftpds[0]):  # the primary is gone
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait()
    wait_for(lambda: "to PARTNER-DOWN state" in keas[1].output(), "the standby to take over",
             timeout=60, watch=[keas[1]])
    console, screen = pxe_boot(node, primary, host, build_id, [keas[1], tftpds[1]])

    assert acknowledged(Dhcp.KEA, keas[1], host, "br0"), keas[1].output()
    assert f"net0: {host.ip}/{c.internal_subnet.netmask} gw {c.internal_router}" in screen
    assert f"Next server: {PAIR[1]}" in screen
    assert f"tftp://{PAIR[1]}/pxelinux.0... ok" in screen
    assert_own_kernel_line(tftp, host, console)


def pxelinux_entry(config: Path) -> dict[str, str]:
    """KERNEL, INITRD and APPEND of the (only) label of a generated pxelinux config."""
    words = (line.strip().split(None, 1) for line in config.read_text().splitlines())
    return {w[0]: w[1] for w in words if len(w) == 2 and w[0] in {"KERNEL", "INITRD", "APPEND"}}
