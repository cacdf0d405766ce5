"""The live DHCP tests' parts: the DHCP servers running generated configs, and the node.

`start_dhcp_server` runs ISC dhcpd, Kea or dnsmasq in a namespace with the config tcbuild
generated; only lease files, pid files and sockets move to the test's directory. Whatever
answers (one of them, or a Kea pair), the two-NIC node runs ISC `dhclient` with the image's
`dhclient.conf` and exit hook exactly as tcbuild renders them, and must come up as the inventory
says: its fixed address on eth1, its second IP (option 187) on eth0, the default route through
the external gateway, its FQDN as hostname (in its own UTS namespace), the lease and NRPE bound
to its internal address (tests/test_dhcp_servers.py, tests/test_bootserver_e2e.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcbuild.bootserver import dnsmasq
from tcbuild.bootserver.files import Dhcp, server_files
from tcbuild.config.inventory import Host, Inventory
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.config.recipefile import load_recipe
from tcbuild.image.overlay import read_overlay
from tcbuild.stages.build import template_context

from .netns import Daemon, Lab, run
from .requires import require_tool

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/gameserver.toml"
DHCLIENT_SCRIPT = "/opt/tcbuild/dhclient-script"  # the image's own, as bootlocal.sh runs it


def recipe_inventory() -> Inventory:
    """The inventory the image's recipe names: server and image share its values."""
    path = load_recipe(RECIPE).inventory
    assert path is not None
    return load_inventory(path)


def render_image_files(out: Path) -> dict[str, Path]:
    """The image's overlay files as tcbuild renders them, written under `out` by image path.

    The context is the build's, with a stand-in kernel version and build id (no template
    here uses them).
    """
    recipe = load_recipe(RECIPE)
    context = template_context(recipe, "6.6.8-tinycore64", "0" * 12)
    files = {}
    for overlay in recipe.overlays:
        for item in read_overlay(overlay.source, context, 0):
            if stat.S_ISREG(item.entry.mode) and item.entry.data is not None:
                path = out / item.entry.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(item.entry.data)
                path.chmod(stat.S_IMODE(item.entry.mode))
                files["/" + item.entry.name] = path
    return files


def kea_json(text: str) -> dict[str, Any]:
    """A generated Kea config as data (Kea reads `//` comments; json does not)."""
    return json.loads("\n".join(line for line in text.splitlines()
                                if not line.startswith("//")))


def start_kea(lab: Lab, namespace: str, name: str, text: str, workdir: Path) -> Daemon:
    """kea-dhcp4 with a generated config; only its lease file and sockets move to `workdir`."""
    require_tool("kea-dhcp4", "kea-dhcp4-server")
    config = kea_json(text)
    workdir.mkdir()
    config["Dhcp4"]["lease-database"]["name"] = str(workdir / "leases4.csv")
    config["Dhcp4"]["control-socket"]["socket-name"] = str(workdir / "kea4-ctrl-socket")
    conf = workdir / "kea-dhcp4.conf"
    conf.write_text(json.dumps(config))
    return lab.start(namespace, name, [
        "env", f"KEA_PIDFILE_DIR={workdir}", f"KEA_LOCKFILE_DIR={workdir}",
        "kea-dhcp4", "-c", conf])


def start_dhcp_server(lab: Lab, namespace: str, server: Dhcp, inventory: Inventory,
                      workdir: Path, interface: str) -> Daemon:
    """The DHCP server with its generated config, serving once this returns."""
    files = server_files(inventory, [server])
    if server is Dhcp.KEA:
        kea = start_kea(lab, namespace, "kea", files["kea-dhcp4.conf"], workdir / "kea")
        kea.wait_for_output("DHCP4_STARTED")
        return kea
    workdir = workdir / server
    workdir.mkdir()
    if server is Dhcp.ISC:
        require_tool("dhcpd", "isc-dhcp-server")
        conf, leases = workdir / "dhcpd.conf", workdir / "dhcpd.leases"
        conf.write_text(files["dhcpd.conf"])
        leases.touch()
        dhcpd = lab.start(namespace, "dhcpd", [
            "dhcpd", "-4", "-f", "-d", "-cf", conf, "-lf", leases, "-pf", workdir / "dhcpd.pid",
            interface])
        dhcpd.wait_for_output("Server starting service.")
        return dhcpd
    require_tool("dnsmasq", "dnsmasq-base")
    conf = dnsmasq_files(files, workdir)
    dnsmasq = lab.start(namespace, "dnsmasq", [
        "dnsmasq", "--keep-in-foreground", "--log-dhcp", "--log-facility=-", f"--conf-file={conf}",
        f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}", f"--pid-file={workdir / 'dnsmasq.pid'}",
        "--user=root"])
    dnsmasq.wait_for_output("DHCP, static leases only on")
    return dnsmasq


def dnsmasq_files(files: dict[str, str], workdir: Path) -> Path:
    """Write dnsmasq's config with its per-host files in `workdir` (the config names them)."""
    conf = workdir / "dnsmasq.conf"
    text = files["dnsmasq.conf"]
    for name, installed in ((dnsmasq.HOSTS, dnsmasq.HOSTS_FILE), (dnsmasq.OPTS, dnsmasq.OPTS_FILE)):
        (workdir / name).write_text(files[name])
        text = text.replace(f"={installed}\n", f"={workdir / name}\n")
    conf.write_text(text)
    return conf


def acknowledged(server: Dhcp, daemon: Daemon, host: Host, interface: str) -> bool:
    """Whether the server's log shows it gave `host` its address (on `interface`)."""
    log = daemon.output()
    if server is Dhcp.ISC:
        return f"DHCPACK on {host.ip} to {host.mac} via {interface}\n" in log
    if server is Dhcp.KEA:
        found = re.search(rf"DHCP4_LEASE_ALLOC \[hwtype=1 {host.mac}\].* lease {host.ip} ", log)
        return found is not None
    return f"DHCPACK({interface}) {host.ip} {host.mac} {host.name}\n" in log


def require_dhclient() -> None:
    require_tool("dhclient", "isc-dhcp-client")
    require_tool("busybox", "busybox-static")


@dataclass
class Node:
    """A node's namespace and the files its dhclient runs write (one directory per node)."""

    namespace: str
    host: Host
    workdir: Path
    image: dict[str, Path]
    runs: int = 0

    @property
    def lease_file(self) -> Path:
        return self.workdir / "dhclient.leases"

    def dhclient(self, lab: Lab) -> Daemon:
        """Start the image's dhclient on eth1, as a booting node does (each call: a reboot).

        The node's view, in its own mount and UTS namespaces: /etc, /usr/sbin and /usr/local
        are copy-on-write. dhclient runs the image's own dhclient-script (`-sf`, as bootlocal.sh
        starts it), which sources the image's hook from /usr/local/etc; ifconfig and route are
        busybox's, as on Tiny Core. The configuration of the image's nrpe extension is where the
        hook expects it.
        """
        self.runs += 1
        hook = self.image["/usr/local/etc/dhclient-exit-hooks"]
        nrpe_cfg = nrpe_config()
        q = shlex.quote
        setup = f"""
            hostname unnamed-node
            mkdir -p /usr/local/etc
            cp {q(str(hook))} /usr/local/etc/dhclient-exit-hooks
            rm -f /etc/resolv.conf
            : > /etc/resolv.conf
            ln -sf {q(str(shutil.which("busybox")))} /usr/sbin/ifconfig
            ln -sf {q(str(shutil.which("busybox")))} /usr/sbin/route
            mkdir -p {q(str(Path(nrpe_cfg).parent))}
            cp {q(str(ROOT / "recipes/extras/nrpe" / nrpe_cfg.lstrip("/")))} {q(nrpe_cfg)}
        """
        return lab.start(
            self.namespace, f"dhclient-{self.host.name}-{self.runs}",
            ["dhclient", "-d", "-v", "-1", "-cf", self.image["/usr/local/etc/dhclient.conf"],
             "-sf", self.image[DHCLIENT_SCRIPT], "-pf", self.workdir / "dhclient.pid",
             "-lf", self.lease_file, "eth1"],
            uts=True, private=["/etc", "/usr/sbin", "/usr/local"], setup=setup)


def nrpe_config() -> str:
    return str(load_recipe(RECIPE).vars["nrpe_cfg"])


def two_nic_node(lab: Lab, inventory: Inventory, host: Host, upstream: str, port: str,
                 workdir: Path) -> Node:
    """A node namespace: eth1 (the host's MAC) to `port` in `upstream`, eth0 to the public net.

    The public network is a namespace of its own holding the external gateway's address.
    """
    c = inventory.cluster
    node, public = lab.namespace(host.name), lab.namespace(f"public-{host.name}")
    lab.link(upstream, port, node, "eth1", mac=host.mac)  # the node's internal NIC: PXE, DHCP
    lab.link(public, f"ext-{host.name}"[:15], node, "eth0")  # its external NIC
    lab.ip(public, "addr", "add", f"{c.external_gateway}/{c.external_network.prefixlen}",
           "dev", f"ext-{host.name}"[:15])
    workdir.mkdir(parents=True, exist_ok=True)
    return Node(node, host, workdir, render_image_files(workdir / "image"))


def check_node(lab: Lab, node: Node, dhclient: Daemon, inventory: Inventory,
               boot_file: str) -> None:
    """Wait for the lease, then check the node is configured as the inventory says."""
    c, host = inventory.cluster, node.host
    dhclient.wait_for_output(f"bound to {host.ip} ")  # printed once the exit hook returned
    addresses = {link["ifname"]: [(a["local"], a["prefixlen"]) for a in link["addr_info"]]
                 for link in json.loads(lab.ip(node.namespace, "-j", "-4", "addr", "show"))}
    assert addresses.get("eth1") == [(str(host.ip), c.internal_subnet.prefixlen)]
    assert addresses.get("eth0") == [(str(host.second_ip), c.external_network.prefixlen)]
    routes = json.loads(lab.ip(node.namespace, "-j", "-4", "route", "show", "default"))
    assert [(r["gateway"], r["dev"]) for r in routes] == [(str(c.external_gateway), "eth0")]
    [chosen] = json.loads(lab.ip(node.namespace, "-j", "-4", "route", "get", "198.51.100.7"))
    assert (chosen["gateway"], chosen["dev"]) == (str(c.external_gateway), "eth0")

    node_name = run("nsenter", "--target", str(dhclient.pid), "--uts", "hostname").stdout
    assert node_name.strip() == host.fqdn(c.domain)
    assert socket.gethostname() != node_name.strip()  # the host kept its own

    lease = last_lease(node.lease_file.read_text())
    assert f"fixed-address {host.ip};" in lease
    assert f"option second-ip {host.second_ip};" in lease
    assert f'option host-name "{host.fqdn(c.domain)}";' in lease
    assert f'filename "{boot_file}";' in lease
    assert f"server_address={host.ip}\n" in dhclient.path(nrpe_config()).read_text()


def last_lease(text: str) -> str:
    """The newest `lease { ... }` block of a dhclient lease file."""
    return text[text.rindex("lease {"):]


def server_identifier(node: Node) -> str:
    """Which server answered the node's last lease (option 54)."""
    lease = last_lease(node.lease_file.read_text())
    return lease.split("option dhcp-server-identifier ", 1)[1].split(";", 1)[0]
