"""dnsmasq: the DHCP server many small sites already run, and its proxy-DHCP mode.

`dnsmasq.conf` gives the service of the dhcpd config: a static-only range (no address for an
unknown client), one `dhcp-host` per node with its fixed address and name, option 187 per node
(through a tag the host line sets), the router, and the boot program by client class (the rules
of `bootfile`). `dnsmasq-proxy.conf` is for a network whose addresses another DHCP server hands
out: dnsmasq then only answers PXE clients with their boot program, so a node gets no fixed
address and no option 187 from it. `dnsmasq-tftp.conf`, added beside either, makes dnsmasq the
TFTP server of the published tree instead of tftpd-hpa. DNS is off (`port=0`). Pure text.
"""

from __future__ import annotations

from ..boot.bootfile import DEFAULT, IPXE_USER_CLASS, Client, boot_rules
from ..config.discovery import LEASE_SECONDS as DISCOVERY_SECONDS
from ..config.discovery import PXELINUX_CONFIGFILE
from ..config.inventory import Inventory
from .generated import DISCOVERY_CONFIG, LEASE_SECONDS, discovery_script, header

CONF = "dnsmasq.conf"
HOSTS = "dnsmasq-hosts"
OPTS = "dnsmasq-opts"
HOSTS_FILE = "/etc/tcbuild/dnsmasq-hosts"
OPTS_FILE = "/etc/tcbuild/dnsmasq-opts"
"""Where `dnsmasq.conf` reads the per-node lines (`dhcp-hostsfile`, `dhcp-optsfile`): dnsmasq
re-reads both on SIGHUP, so a node is added or removed without a restart (`enroll --apply`)."""
PROXY_CONF = "dnsmasq-proxy.conf"
TFTP_CONF = "dnsmasq-tftp.conf"

HOST_TAG = "host-"
"""Prefix of a node's tag, so no host name can be taken for a client class's tag."""

PXE_CSA = {0: "x86PC", 7: "BC_EFI", 9: "x86-64_EFI"}
"""dnsmasq's names for the client architectures (option 93) in `pxe-service`."""


def dnsmasq_files(inventory: Inventory) -> dict[str, str]:
    return {CONF: dnsmasq_conf(inventory), HOSTS: dnsmasq_hosts(inventory),
            OPTS: dnsmasq_opts(inventory), PROXY_CONF: dnsmasq_proxy_conf(inventory),
            TFTP_CONF: dnsmasq_tftp_conf(inventory)}


def dnsmasq_conf(inventory: Inventory) -> str:
    """DHCP for the nodes: fixed addresses, names, option 187, the boot program."""
    c = inventory.cluster
    subnet = c.internal_subnet
    lines = [
        header(inventory),
        "# DHCP only: no DNS.",
        "port=0",
        f"listen-address={c.boot_server}",
        "dhcp-authoritative",
        "# Addresses only for the nodes below (static): an unknown client gets none"
        + (" but a discovery lease (below)." if c.discovery else "."),
        f"dhcp-range={subnet.network_address},static,{subnet.netmask},{LEASE_SECONDS}",
        f"dhcp-option=option:router,{c.internal_router}",  # netmask, broadcast: dnsmasq's own
    ]
    if c.domain:
        lines += [f"domain={c.domain}", f"dhcp-option=option:domain-name,{c.domain}"]
    lines += ["", *client_classes(inventory.cluster.http_url), *discovery(inventory)]
    for rule in boot_rules(c.http_url):
        lines.append(f"dhcp-boot=tag:{rule.client}{not_ipxe(rule.client, c.http_url)},"
                     f"{rule.file}{server_part(rule.client, str(c.boot_server))}")
    lines.append(f"dhcp-boot={DEFAULT},,{c.boot_server}")
    lines += ["", "# Per node (re-read on SIGHUP): its address and name, its second (public)",
              "# address as DHCP option 187, its FQDN as host name (dnsmasq's own option 12",
              "# would carry the bare name).",
              f"dhcp-hostsfile={HOSTS_FILE}", f"dhcp-optsfile={OPTS_FILE}"]
    return "\n".join(lines) + "\n"


def dnsmasq_hosts(inventory: Inventory) -> str:
    """`dhcp-hostsfile`: one line per node, its MAC, tag, fixed address and name."""
    return header(inventory) + "".join(
        f"{host.mac},set:{HOST_TAG}{host.name},{host.ip},{host.name}\n"
        for host in inventory.hosts)


def dnsmasq_opts(inventory: Inventory) -> str:
    """`dhcp-optsfile`: each node's option 187 and FQDN, sent whether asked for or not."""
    domain = inventory.cluster.domain
    return header(inventory) + "".join(
        f"tag:{HOST_TAG}{host.name},187,{host.second_ip}\n"
        f"tag:{HOST_TAG}{host.name},12,\"{host.fqdn(domain)}\"\n"
        for host in inventory.hosts)


def inlined(conf: str, hosts: str, opts: str) -> str:
    """`dnsmasq.conf` with the lines of its per-node files written in: what `dnsmasq --test`
    checks (it does not read those files; dnsmasq skips a bad line of them on SIGHUP)."""
    def body(text: str) -> list[str]:
        return [line for line in text.splitlines() if line and not line.startswith("#")]
    return (conf + "".join(f"dhcp-host={line}\n" for line in body(hosts))
            + "".join(f"dhcp-option={line}\n" for line in body(opts)))


def dnsmasq_proxy_conf(inventory: Inventory) -> str:
    """Proxy DHCP: boot programs only; another server hands out the addresses."""
    c = inventory.cluster
    subnet = c.internal_subnet
    lines = [
        header(inventory),
        "# Proxy DHCP: another DHCP server hands out the addresses; this one only tells PXE",
        "# clients what to boot. No fixed addresses, no host names, no option 187 from here.",
        "port=0",
        f"listen-address={c.boot_server}",
        f"dhcp-range={subnet.network_address},proxy,{subnet.netmask}",
        *client_classes(c.http_url),
        "# Boot at once: no menu, no prompt.",
        'pxe-prompt="tcbuild",0',
    ]
    for rule in boot_rules(c.http_url):
        if rule.client is Client.IPXE:
            services = [(f"tag:{rule.client},", "x86PC"), (f"tag:{rule.client},", "x86-64_EFI")]
        else:
            services = [(f"tag:!{Client.IPXE}," if c.http_url else "", PXE_CSA[arch])
                        for arch in rule.architectures]
        for tag, csa in services:
            lines.append(f'pxe-service={tag}{csa},"{rule.client}",{rule.file},{c.boot_server}')
    return "\n".join(lines) + "\n"


def dnsmasq_tftp_conf(inventory: Inventory) -> str:
    """The TFTP server, for either config above: the published tree (dnsmasq only reads)."""
    return (header(inventory)
            + "# dnsmasq serves the TFTP root itself (stop tftpd-hpa first: both want port 69).\n"
            + "enable-tftp\n"
            + f"tftp-root={inventory.cluster.tftp_root}\n")


def client_classes(http_url: str | None) -> list[str]:
    """Tags for the client classes of `bootfile`: iPXE by user class, firmware by option 93."""
    lines = ["# Client classes: iPXE by its user class, firmware by architecture (option 93)."]
    if http_url:
        lines.append(f"dhcp-userclass=set:{Client.IPXE},{IPXE_USER_CLASS}")
    for rule in boot_rules(http_url):
        lines += [f"dhcp-match=set:{rule.client},option:client-arch,{arch}"
                  for arch in rule.architectures]
    return lines


def not_ipxe(client: Client, http_url: str | None) -> str:
    """iPXE sends option 93 too: the firmware classes exclude it when it has its own file."""
    return f",tag:!{Client.IPXE}" if http_url and client is not Client.IPXE else ""


def server_part(client: Client, server: str) -> str:
    """The TFTP server of a file name; a URL names its own."""
    return "" if client is Client.IPXE else f",,{server}"


def discovery(inventory: Inventory) -> list[str]:
    """A machine no dhcp-host line names (dnsmasq's tag `known` unset): a short lease from the
    discovery range, the discovery config by option 209 sent unasked, for iPXE its twin (this
    dhcp-boot line comes first: dnsmasq takes the first that matches). Nothing without a range."""
    c = inventory.cluster
    if c.discovery is None:
        return []
    mask = c.internal_subnet.netmask
    lines = ["# Machines the inventory does not know: discovery (tcbuild.config.discovery).",
             f"dhcp-range=tag:!known,{c.discovery.first},{c.discovery.last},{mask},"
             f"{DISCOVERY_SECONDS}",
             f'dhcp-option-force=tag:!known,{PXELINUX_CONFIGFILE},"{DISCOVERY_CONFIG}"']
    if c.http_url:
        lines.append(f"dhcp-boot=tag:{Client.IPXE},tag:!known,{discovery_script(c.http_url)}")
    return lines
