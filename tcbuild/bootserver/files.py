"""The boot server's configuration, generated from an inventory: every file by name, the DHCP
configs for the servers asked for, nginx's site when the tree is served over HTTP.
Deterministic and diff-friendly."""

from __future__ import annotations

from collections.abc import Callable, Collection
from enum import StrEnum

from ..config.inventory import Inventory
from ..errors import boundary
from .dnsmasq import dnsmasq_files
from .isc import dhcpd_conf
from .kea import kea_files
from .nfs import exports, ganesha_conf
from .nginx import SITE, nginx_site
from .rsyslog import rsyslog_conf
from .tftpd import hosts, tftpd_hpa


class Dhcp(StrEnum):
    """The DHCP servers `server-config` writes configs for."""

    ISC = "isc"
    KEA = "kea"
    DNSMASQ = "dnsmasq"


DHCP_FILES: dict[Dhcp, Callable[[Inventory], dict[str, str]]] = {
    Dhcp.ISC: lambda inventory: {"dhcpd.conf": dhcpd_conf(inventory)},
    Dhcp.KEA: kea_files,
    Dhcp.DNSMASQ: dnsmasq_files,
}

GENERATORS: dict[str, Callable[[Inventory], str]] = {
    "rsyslog-tcbuild.conf": rsyslog_conf,
    "exports": exports,
    "ganesha.conf": ganesha_conf,
    "tftpd-hpa": tftpd_hpa,
    "hosts": hosts,
}


@boundary
def server_files(inventory: Inventory, dhcp: Collection[Dhcp] = tuple(Dhcp)) -> dict[str, str]:
    """Every generated file by name, in a fixed order; DHCP configs for the servers in `dhcp`."""
    files = {}
    for server, generate_all in DHCP_FILES.items():
        if server in dhcp:
            files.update(generate_all(inventory))
    files.update({name: generate(inventory) for name, generate in GENERATORS.items()})
    if inventory.cluster.http_url:  # the tree served over HTTP: nginx's site for it
        files[SITE] = nginx_site(inventory)
    return files
