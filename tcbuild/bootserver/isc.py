"""ISC dhcpd's configuration: PXE boot by client class, one host stanza per node; pure text."""

from __future__ import annotations

from ..boot.bootfile import ARCH_OPTION, DEFAULT, IPXE_USER_CLASS, Client, boot_rules
from ..config.discovery import LEASE_SECONDS, PXELINUX_CONFIGFILE
from ..config.inventory import Inventory
from .generated import DISCOVERY_CONFIG, discovery_script, header


def dhcpd_conf(inventory: Inventory) -> str:
    """ISC dhcpd: PXE boot by client class, the internal subnet, one host stanza per node."""
    c = inventory.cluster
    subnet = c.internal_subnet
    lines = [
        header(inventory),
        "# The second (public) address of a node, handed out as DHCP option 187.",
        "option second-ip code 187 = ip-address;",
        "# The client's architecture (RFC 4578): the boot program is chosen by it.",
        f"option arch code {ARCH_OPTION} = unsigned integer 16;",
    ]
    if c.discovery:
        lines += ["# The config file PXELINUX reads (RFC 5071): an unknown machine's.",
                  f"option pxelinux-configfile code {PXELINUX_CONFIGFILE} = text;"]
    lines += [
        "",
        "authoritative;",
        "allow booting;",
        "allow bootp;",
        "",
        f"subnet {subnet.network_address} netmask {subnet.netmask} {{",
        f"    option routers {c.internal_router};",
        f"    option subnet-mask {subnet.netmask};",
        f"    option broadcast-address {subnet.broadcast_address};",
    ]
    if c.domain:
        lines.append(f'    option domain-name "{c.domain}";')
    lines += [
        f"    next-server {c.boot_server};",
        *dhcpd_boot_file(c.http_url),
        *discovery_pool(inventory),
        "}",
    ]
    for host in inventory.hosts:
        lines += [
            "",
            f"host {host.name} {{",
            f"    hardware ethernet {host.mac};",
            f"    fixed-address {host.ip};",
            f'    option host-name "{host.fqdn(c.domain)}";',
            f"    option second-ip {host.second_ip};",
            "}",
        ]
    return "\n".join(lines) + "\n"


def dhcpd_boot_file(http_url: str | None) -> list[str]:
    """The `filename` by client class, most specific first (`bootfile.boot_rules`): iPXE
    (only with `http_url`, so it never loads a loader that would start iPXE again), x64 UEFI,
    BIOS; a client without option 93 gets the default."""
    rules = boot_rules(http_url)
    lines = [f"    # The boot program by client class, in this order: "
             f"{', '.join(rule.client.value for rule in rules)} (tcbuild.bootfile)."]
    for n, rule in enumerate(rules):
        if rule.client is Client.IPXE:
            test = f'exists user-class and option user-class = "{IPXE_USER_CLASS}"'
        else:
            test = " or ".join(f"option arch = {arch >> 8:02x}:{arch & 0xff:02x}"
                               for arch in rule.architectures)
        lines += [f"    {'if' if n == 0 else '} elsif'} {test} {{",
                  f'        filename "{rule.file}";']
    return [*lines, "    } else {", f'        filename "{DEFAULT}";', "    }"]


def discovery_pool(inventory: Inventory) -> list[str]:
    """A machine no host stanza names: a short lease from the discovery range, and the discovery
    config by option 209, sent unasked (the PXE firmware does not ask for it, and pxelinux reads
    the firmware's reply). An iPXE client gets the config's twin. Nothing without a range."""
    c = inventory.cluster
    if c.discovery is None:
        return []
    lines = [
        "    # Machines the inventory does not know: discovery (tcbuild.config.discovery).",
        "    pool {",
        f"        range {c.discovery.first} {c.discovery.last};",
        "        deny known-clients;",
        f"        default-lease-time {LEASE_SECONDS};",
        f"        max-lease-time {LEASE_SECONDS};",
        f'        option pxelinux-configfile "{DISCOVERY_CONFIG}";',
        "        if exists dhcp-parameter-request-list {",
        "            option dhcp-parameter-request-list = "
        f"concat(option dhcp-parameter-request-list, {PXELINUX_CONFIGFILE:02x});",
        "        }",
    ]
    if c.http_url:
        lines += [f'        if exists user-class and option user-class = "{IPXE_USER_CLASS}" {{',
                  f'            filename "{discovery_script(c.http_url)}";',
                  "        }"]
    return [*lines, "    }"]
