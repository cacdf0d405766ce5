"""The whole boot server, end to end: a QEMU node PXE-boots from the real daemons.

In a network namespace of its own the boot server runs a DHCP server with its generated config
(ISC dhcpd, Kea, then dnsmasq) and tftpd-hpa with the options of the generated tftpd-hpa
defaults, serving the TFTP root that `tcbuild publish` filled with the example recipe. QEMU's
NIC is a tap device on the bridge that carries the boot server's address, in that same
namespace: QEMU's own DHCP and TFTP take no part. The node must come up as the inventory says:
its fixed address, its per-MAC kernel line, the published build. Once more with UEFI firmware
(OVMF) against dhcpd: its architecture (option 93) gets it bootx64.efi, which reads the same
per-MAC config. Nothing here touches the host's own network (tests/netns.py).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tcbuild import boottest
from tcbuild.boottest import Firmware
from tcbuild.inventory import load_inventory
from tcbuild.server import Dhcp, tftpd_hpa

from .conftest import require_tool
from .dhcplab import acknowledged, start_dhcp_server
from .netns import Daemon, Lab, wait_for
from .nodekit import BUILD_ID, CANARY, MARKER, kernel_line, publish

TFTP_PORT = 69


def defaults(text: str) -> dict[str, str]:
    """The variables of a shell-sourced defaults file such as /etc/default/tftpd-hpa."""
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            (values[name.strip()],) = shlex.split(value)
    return values


def udp_bound(daemon: Daemon, address: str, port: int) -> bool:
    """Whether the daemon's network namespace has a UDP socket bound to address:port."""
    octets = bytes(int(o) for o in address.split("."))
    local = f"{int.from_bytes(octets, 'little'):08X}:{port:04X}"
    rows = Path(f"/proc/{daemon.pid}/net/udp").read_text().splitlines()[1:]
    return any(row.split()[1] == local for row in rows)


@pytest.mark.parametrize(("dhcp_server", "firmware"), [
    *((d, Firmware.BIOS) for d in Dhcp), (Dhcp.ISC, Firmware.UEFI)],
    ids=[*(str(d) for d in Dhcp), "isc-uefi"])
def test_node_boots_from_the_generated_boot_server(node: Path, lab: Lab, dhcp_server: Dhcp,
                                                   firmware: Firmware) -> None:
    require_tool("in.tftpd", "tftpd-hpa")
    inventory = load_inventory(node / "examples/cluster.toml")  # the one publish reads
    c = inventory.cluster
    (host,) = [h for h in inventory.hosts if h.mac == CANARY]  # the node QEMU plays
    build_id = publish(node)
    tftp = (node / "tftp").resolve()

    server = lab.namespace("server")
    lab.ip(server, "link", "add", "br0", "type", "bridge")
    lab.ip(server, "tuntap", "add", "dev", "tap0", "mode", "tap")
    lab.interfaces |= {"br0", "tap0"}
    lab.ip(server, "link", "set", "tap0", "master", "br0")
    lab.ip(server, "addr", "add", f"{c.boot_server}/{c.internal_subnet.prefixlen}", "dev", "br0")
    lab.ip(server, "link", "set", "tap0", "up")
    lab.ip(server, "link", "set", "br0", "up")

    dhcp = start_dhcp_server(lab, server, dhcp_server, inventory, node, "br0")

    # As Debian's init script runs it, with the generated values; only the directory is ours.
    tftpd_conf = defaults(tftpd_hpa(inventory))
    assert tftpd_conf["TFTP_DIRECTORY"] == c.tftp_root
    assert tftpd_conf["TFTP_ADDRESS"] == f"{c.boot_server}:{TFTP_PORT}"
    tftpd = lab.start(server, "tftpd", [
        "in.tftpd", "-L", "--user", tftpd_conf["TFTP_USERNAME"],
        "--address", tftpd_conf["TFTP_ADDRESS"], *shlex.split(tftpd_conf["TFTP_OPTIONS"]), tftp])
    wait_for(lambda: udp_bound(tftpd, str(c.boot_server), TFTP_PORT), "tftpd listening",
             watch=[tftpd])

    log = (node / "console.log").absolute()
    qemu = boottest.pxe_command(tftp, log, host.mac, firmware=firmware,
                                netdev="tap,id=n0,ifname=tap0,script=no,downscript=no")
    bios = firmware is Firmware.BIOS  # OVMF writes its screen to the console
    result = boottest.watch(["ip", "netns", "exec", server, *qemu], log,
                            MARKER, timeout=120, console_to_log=False,
                            firmware=boottest.firmware_log(log) if bios else None)
    console = log.read_text(errors="replace")
    screen = boottest.CONTROL.sub("", boottest.firmware_log(log).read_text(errors="replace")
                                  if bios else console)
    assert result.ok, f"{result.reason}\n{result.tail}\n--- {dhcp.name}:\n{dhcp.output()}"
    assert tftpd.process.poll() is None and dhcp.process.poll() is None

    found = BUILD_ID.search(console)
    assert found and found[1] == build_id, console[-2000:]

    # The DHCP server gave the host its fixed address and the boot server (the firmware shows
    # both). ISC dhcpd keeps no lease-file entry for a host with a fixed-address (only pool
    # leases are recorded), so the servers' logs and the firmware's view show the lease.
    assert acknowledged(dhcp_server, dhcp, host, "br0"), dhcp.output()
    assert f"net0: {host.ip}/{c.internal_subnet.netmask} gw {c.internal_router}" in screen
    assert f"Next server: {c.boot_server}" in screen
    assert f"tftp://{c.boot_server}/{firmware.network_loader}... ok" in screen

    # pxelinux read the node's own 01-<mac> config (the canary group's line), not `default`.
    mine = pxelinux_entry(tftp / "pxelinux.cfg" / ("01-" + host.mac.replace(":", "-")))
    assert mine["APPEND"] != pxelinux_entry(tftp / "pxelinux.cfg/default")["APPEND"]
    assert kernel_line(console).split("Kernel command line: ", 1)[1].strip() == (
        f"BOOT_IMAGE={mine['KERNEL']} {mine['APPEND']} initrd={mine['INITRD']}")


def pxelinux_entry(config: Path) -> dict[str, str]:
    """KERNEL, INITRD and APPEND of the (only) label of a generated pxelinux config."""
    words = (line.strip().split(None, 1) for line in config.read_text().splitlines())
    return {w[0]: w[1] for w in words if len(w) == 2 and w[0] in {"KERNEL", "INITRD", "APPEND"}}
