"""The cluster inventory: boot-server settings and one entry per node, validated all at once.

One file feeds the boot server's configuration (`server`), the image's templates (its cluster
values become template variables) and, later, per-host boot configs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TypeVar

from ..errors import RecipeError
from ..formats.tomlfile import key_path, type_name
from .bmc import PowerAccess
from .discovery import DiscoveryRange, parse_range
from .recipe import kernel_line_problem
from .values import (
    ADDRESS_KEYS,
    BOOT_SERVERS_MAX,
    NETWORK_KEYS,
    PATH_KEYS,
    domain_problem,
    duplicates,
    fqdn_of,
    fqdn_problem,
    http_url_problem,
    inside_problem,
    mac_problem,
    name_pattern_problem,
    name_problem,
    normal_mac_problem,
    options_problem,
    path_problem,
    place_problems,
    port_problem,
    tag_problem,
    unique_keys,
)

T = TypeVar("T")


def log_names(name: str) -> tuple[str, str]:
    """The log host's files for node `name`: all it sends, and its game server's errors."""
    return f"{name}.log", f"{name}-err.log"


@dataclass(frozen=True)
class Cluster:
    """Settings shared by every node and the boot server."""

    domain: str
    boot_server: IPv4Address
    internal_subnet: IPv4Network
    internal_router: IPv4Address
    external_network: IPv4Network
    external_gateway: IPv4Address
    log_host: IPv4Address
    nfs_server: IPv4Address
    nfs_export: str
    nfs_mountpoint: str
    nfs_clients: IPv4Network
    nfs_export_options: str
    tftp_root: str
    log_dir: str
    syslog_port: int
    game_log_tag: str
    boot_servers: tuple[IPv4Address, ...]  # 1 or 2 (a Kea HA pair), boot_server first
    http_url: str | None  # where the published tree is served over HTTP, ending in "/"
    discovery: DiscoveryRange | None = None  # addresses for machines not in the inventory
    name_pattern: str = "server{n}"  # the names `enroll` gives, {n} a number

    def __post_init__(self) -> None:
        """Every value obeys the reader's rules however the cluster was made: its values reach
        dhcpd, Kea, dnsmasq, rsyslog, exports and the shell-sourced tftpd-hpa defaults."""
        _raise(f"cluster.{key}: {problem}" for key, problem in _cluster_problems(self))

    def template_vars(self) -> dict[str, str | int]:
        """What the image's templates see of the cluster (names a recipe may not redefine)."""
        return {
            "domain": self.domain,
            "boot_server": str(self.boot_server),
            "internal_subnet": str(self.internal_subnet),
            "internal_router": str(self.internal_router),
            "internal_netmask": str(self.internal_subnet.netmask),
            "external_network": str(self.external_network),
            "external_netmask": str(self.external_network.netmask),
            "external_broadcast": str(self.external_network.broadcast_address),
            "external_gateway": str(self.external_gateway),
            "log_host": str(self.log_host),
            "nfs_server": str(self.nfs_server),
            "nfs_export": self.nfs_export,
            "nfs_mountpoint": self.nfs_mountpoint,
            "game_log_tag": self.game_log_tag,
        }


@dataclass(frozen=True)
class Group:
    """Hosts that boot another recipe or another kernel line than the default."""

    name: str
    recipe: Path | None
    append: str | None


@dataclass(frozen=True)
class Host:
    name: str
    mac: str  # lower case, colon separated
    ip: IPv4Address
    second_ip: IPv4Address
    group: str | None
    power: PowerAccess | None = None  # its BMC or power_command (config/bmc.py), if any

    def __post_init__(self) -> None:
        """A host's name, MAC and addresses obey the reader's rules however it was made."""
        types = [(key, f"{value!r} is not an IPv4 address") for key, value in
                 (("ip", self.ip), ("second_ip", self.second_ip))
                 if not isinstance(value, IPv4Address)]
        if self.group is not None and not isinstance(self.group, str):
            types.append(("group", f"expected a string, got {type_name(self.group)}"))
        problems = [*types, ("name", name_problem(self.name)), ("mac", mac_problem(self.mac)
                                                              or normal_mac_problem(self.mac))]
        _raise(f"host.{key}: {problem}" for key, problem in problems if problem)

    def fqdn(self, domain: str) -> str:
        return self.fqdn_of(self.name, domain)

    fqdn_of = staticmethod(fqdn_of)


@dataclass(frozen=True)
class Inventory:
    path: Path
    cluster: Cluster
    hosts: tuple[Host, ...]
    groups: Mapping[str, Group]

    def __post_init__(self) -> None:
        """What ties the hosts to the cluster, the groups and each other holds however the
        inventory was made (each of them checked its own values)."""
        problems = [(f"{key_path('group', name)}{key}", problem) for name, group
                    in self.groups.items() for key, problem in group_problems(group)]
        rows = []
        for i, host in enumerate(self.hosts):
            where = f"host[{i}]."
            problems += host_problems(where, host.ip, host.second_ip, host.group,
                                      place_of(self.cluster), self.groups)
            fqdn = fqdn_problem(host.name, self.cluster.domain)
            problems += [(f"{where}name", fqdn)] if fqdn else []
            rows.append((where, unique_keys(host.name, host.mac, host.ip, host.second_ip)))
            if self.cluster.discovery is not None and host.ip in self.cluster.discovery:
                problems.append(("cluster.discovery", f"{self.cluster.discovery} includes "
                                 f"{host.ip}, the fixed address of host {host.name}"))
        problems += duplicates(rows)
        _raise(f"{self.path}: {key}: {problem}" for key, problem in problems)


# -- the rules of the types (the reader applies them too) ----------------------------------------

def _raise(problems: Iterable[str]) -> None:
    found = list(problems)
    if found:
        raise RecipeError(found)


def group_problems(group: Group) -> Iterator[tuple[str, str]]:
    """(key under `group.<name>`, problem) of a group: its append is a kernel line."""
    if group.recipe is None and not group.append:
        yield "", "needs a recipe or an append line"
    problem = kernel_line_problem(group.append or "")
    if problem:
        yield ".append", problem


Place = tuple[IPv4Network, IPv4Network, set[IPv4Address]]
"""Where a host's addresses belong: the internal subnet, the external network, and the
cluster's own addresses (which no host may take)."""


def place_of(cluster: Cluster) -> Place:
    return (cluster.internal_subnet, cluster.external_network, {
        cluster.internal_router, cluster.boot_server, cluster.external_gateway,
        *cluster.boot_servers})


def host_problems(where: str, ip: IPv4Address | None, second: IPv4Address | None,
                  group: str | None, place: Place | None, groups: Collection[str]
                  ) -> Iterator[tuple[str, str]]:
    """(key, problem) of a host's place: its addresses in the cluster's networks and not the
    cluster's own, its group defined (None: not known, not checked)."""
    if place is not None:
        yield from place_problems(where, ip, second, *place)
    if group is not None and group not in groups:
        yield f"{where}group", (f"no group '{group}' (defined: "
                                f"{', '.join(sorted(groups)) or 'none'})")


def _cluster_problems(c: Cluster) -> Iterator[tuple[str, str]]:
    """(key under `cluster.`, problem) of a made cluster."""
    wrong = [(key, f"{getattr(c, key)!r} is not an IPv4 {kind}") for keys, kind, cls in (
        (ADDRESS_KEYS, "address", IPv4Address), (NETWORK_KEYS, "network", IPv4Network))
        for key in keys if not isinstance(getattr(c, key), cls)]
    wrong += [("boot_servers", f"{server!r} is not an IPv4 address") for server in
              c.boot_servers if not isinstance(server, IPv4Address)]
    if wrong:
        yield from wrong
        return
    subnet, external = c.internal_subnet, c.external_network
    checks = [("domain", domain_problem(c.domain)),
              *((key, path_problem(getattr(c, key))) for key in PATH_KEYS),
              ("nfs_export_options", options_problem(c.nfs_export_options)),
              ("syslog_port", port_problem(c.syslog_port)),
              ("game_log_tag", tag_problem(c.game_log_tag)),
              ("http_url", http_url_problem(c.http_url)),
              ("boot_server", inside_problem(c.boot_server, subnet, "internal subnet")),
              ("internal_router", inside_problem(c.internal_router, subnet, "internal subnet")),
              ("external_gateway", inside_problem(c.external_gateway, external,
                                                  "external network"))]
    checks += [(f"boot_servers[{i}]", inside_problem(server, subnet, "internal subnet"))
               for i, server in enumerate(c.boot_servers)]
    if c.discovery is not None:
        taken = [("internal_router", c.internal_router),
                 *((f"boot server {server}", server) for server in c.boot_servers)]
        checks.append(("discovery", parse_range(str(c.discovery), subnet, taken)[1] or None))
    checks.append(("name_pattern", name_pattern_problem(c.name_pattern)))
    servers = c.boot_servers
    if not (0 < len(servers) <= BOOT_SERVERS_MAX and servers[0] == c.boot_server
            and len(set(servers)) == len(servers)):
        checks.append(("boot_servers", f"expected 1 or {BOOT_SERVERS_MAX} distinct addresses, "
                       f"boot_server {c.boot_server} first"))
    yield from ((key, problem) for key, problem in checks if problem)
