"""The cluster inventory: boot-server settings and one entry per node, validated all at once.

One file feeds the boot server's configuration (`server`), the image's templates (its cluster
values become template variables) and, later, per-host boot configs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from ..errors import RecipeError, boundary
from ..formats.tomlfile import CONTROL, control_characters, key_path, read_toml, type_name
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
    servers = c.boot_servers
    if not (0 < len(servers) <= BOOT_SERVERS_MAX and servers[0] == c.boot_server
            and len(set(servers)) == len(servers)):
        checks.append(("boot_servers", f"expected 1 or {BOOT_SERVERS_MAX} distinct addresses, "
                       f"boot_server {c.boot_server} first"))
    yield from ((key, problem) for key, problem in checks if problem)


@boundary
def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read and validate an inventory; `RecipeError` lists every problem with its key path."""
    path = Path(path)
    data = read_toml(path, "inventory")
    return _Reader(path).read(data)


CLUSTER_KEYS = {
    "domain", "boot_server", "internal_subnet", "internal_router", "external_network",
    "external_gateway", "log_host", "nfs_server", "nfs_export", "nfs_mountpoint", "nfs_clients",
    "nfs_export_options", "tftp_root", "log_dir", "syslog_port", "game_log_tag", "boot_servers",
    "http_url",
}
HOST_KEYS = {"name", "mac", "ip", "second_ip", "group"}
GROUP_KEYS = {"recipe", "append"}


class _Reader:
    """Walks the parsed TOML with the types' own rules, collecting problems by key path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        self.tainted: set[str] = set()  # keys whose control characters are reported already
        self.place: Place | None = None  # the cluster's networks, even when it has problems
        self.domain = ""

    def problem(self, key: str, message: str) -> None:
        if key not in self.tainted and not CONTROL.search(key):
            self.problems.append(f"{self.path}: {key}: {message}")

    def made(self, where: str, make: Callable[[], T]) -> T | None:
        """A type made of values the reader let through: None (its problems, under `where`)
        when its own checks refuse them."""
        try:
            return make()
        except RecipeError as e:
            self.problems += [f"{self.path}: {where}{line.split('.', 1)[1]}"
                              for line in e.problems]
            return None

    def refused(self, key: str, problem: str | None) -> bool:
        """Report `problem` under `key`, if there is one."""
        if problem:
            self.problem(key, problem)
        return problem is not None

    def unknown(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.problem(f"{where}{key}", f"unknown key; expected one of: "
                             f"{', '.join(sorted(allowed))}")

    def read(self, data: dict[str, Any]) -> Inventory:
        for key, message in control_characters(data):  # group appends become kernel lines
            self.problems.append(f"{self.path}: {key}: {message}")
            self.tainted.add(key)
        self.unknown(data, "", {"cluster", "group", "host"})
        cluster = self.cluster(data.get("cluster"))
        groups = self.groups(data.get("group", {}))
        hosts = self.hosts(data.get("host", []), groups)
        if self.problems or cluster is None:
            raise RecipeError(self.problems or [f"{self.path}: cluster: missing table"])
        return Inventory(self.path, cluster, hosts, MappingProxyType(groups))

    # -- values --------------------------------------------------------------------------------

    def text(self, table: Mapping[str, Any], key: str, where: str,
             default: str | None = None) -> str | None:
        value = table.get(key, default)
        if isinstance(value, str):
            return value
        if value is None:
            self.problem(f"{where}{key}", "missing")
        else:
            self.problem(f"{where}{key}", f"expected a string, got {type_name(value)}")
        return None

    def checked(self, table: Mapping[str, Any], key: str, where: str, default: str | None,
                rule: Callable[[str], str | None]) -> str | None:
        """A string obeying `rule` (None, reported, when it does not)."""
        value = self.text(table, key, where, default)
        return None if value is None or self.refused(f"{where}{key}", rule(value)) else value

    def address(self, table: Mapping[str, Any], key: str, where: str,
                default: str | None = None) -> IPv4Address | None:
        value = self.text(table, key, where, default)
        if value is None:
            return None
        try:
            return IPv4Address(value)
        except ValueError:
            self.problem(f"{where}{key}", f"'{value}' is not an IPv4 address")
            return None

    def network(self, table: Mapping[str, Any], key: str, where: str,
                default: str | None = None) -> IPv4Network | None:
        value = self.text(table, key, where, default)
        if value is None:
            return None
        try:
            return IPv4Network(value)
        except ValueError as e:
            self.problem(f"{where}{key}", f"'{value}' is not an IPv4 network like "
                         f"'10.1.1.0/24' ({e})")
            return None

    # -- tables --------------------------------------------------------------------------------

    def cluster(self, table: Any) -> Cluster | None:
        if not isinstance(table, dict):
            self.problem("cluster", "missing table" if table is None else "expected a table")
            return None
        self.unknown(table, "cluster.", CLUSTER_KEYS)
        w, before = "cluster.", len(self.problems)
        domain = self.checked(table, "domain", w, "", domain_problem)
        boot = self.address(table, "boot_server", w)
        subnet = self.network(table, "internal_subnet", w)
        router = self.address(table, "internal_router", w)
        external = self.network(table, "external_network", w)
        gateway = self.address(table, "external_gateway", w)
        boot_text = str(boot) if boot else None
        log_host = self.address(table, "log_host", w, boot_text)
        nfs_server = self.address(table, "nfs_server", w, boot_text)
        clients = self.network(table, "nfs_clients", w, str(subnet) if subnet else None)
        for key, address, network, what in (
                ("boot_server", boot, subnet, "internal subnet"),
                ("internal_router", router, subnet, "internal subnet"),
                ("external_gateway", gateway, external, "external network")):
            self.refused(f"{w}{key}", inside_problem(address, network, what))
        self.domain = domain or ""
        paths = {key: self.checked(table, key, w, default, path_problem) for key, default in
                 zip(PATH_KEYS, (None, "/mnt/gameserver", "/tftpboot", "/var/log/remote"),
                     strict=True)}
        options = self.checked(table, "nfs_export_options", w,
                               "ro,sync,no_subtree_check,root_squash", options_problem)
        port = table.get("syslog_port", 514)
        if self.refused(f"{w}syslog_port", port_problem(port)):
            port = 514
        tag = self.checked(table, "game_log_tag", w, "master", tag_problem)
        boot_servers = self.boot_servers(table, boot, subnet)
        if subnet and external and router and boot and gateway:
            self.place = (subnet, external, {router, boot, gateway, *(boot_servers or ())})
        http_url = self.checked(table, "http_url", w, "", lambda url: http_url_problem(
            url or None)) or None
        if (domain is None or boot is None or subnet is None or router is None
                or external is None or gateway is None or log_host is None or nfs_server is None
                or None in paths.values() or clients is None or options is None
                or tag is None or boot_servers is None or len(self.problems) > before):
            return None
        export, mountpoint, tftp_root, log_dir = (str(paths[key]) for key in PATH_KEYS)
        return self.made(w, partial(
            Cluster, domain, boot, subnet, router, external, gateway, log_host, nfs_server,
            export, mountpoint, clients, options, tftp_root, log_dir, port, tag, boot_servers,
            http_url))

    def boot_servers(self, table: Mapping[str, Any], boot: IPv4Address | None,
                     subnet: IPv4Network | None) -> tuple[IPv4Address, ...] | None:
        """`boot_servers`: one or two DHCP/TFTP servers in the internal subnet; [boot_server]."""
        key = "cluster.boot_servers"
        value = table.get("boot_servers")
        if value is None:
            return (boot,) if boot else None
        if (not isinstance(value, list) or not 0 < len(value) <= BOOT_SERVERS_MAX
                or not all(isinstance(v, str) for v in value)):
            self.problem(key, f"expected a list of 1 or {BOOT_SERVERS_MAX} IPv4 addresses like "
                         f'["10.1.1.1", "10.1.1.2"], got {value!r}')
            return None
        servers = []
        for i, text in enumerate(value):
            try:
                address = IPv4Address(text)
            except ValueError:
                self.problem(f"{key}[{i}]", f"'{text}' is not an IPv4 address")
                continue
            if address in servers:
                self.problem(f"{key}[{i}]", f"{address} is listed twice")
                continue
            self.refused(f"{key}[{i}]", inside_problem(address, subnet, "internal subnet"))
            servers.append(address)
        if len(servers) < len(value):
            return None
        if boot is not None and boot not in servers:
            self.problem(key, f"does not include boot_server {boot} (the server the dhcpd and "
                         "dnsmasq configs name, and the first of a pair)")
            return None
        return tuple(sorted(servers, key=lambda server: server != boot))

    def groups(self, table: Any) -> dict[str, Group]:
        if not isinstance(table, dict):
            self.problem("group", "expected tables like [group.canary]")
            return {}
        groups = {}
        for name, value in sorted(table.items()):
            where = f"group.{name}."
            if not isinstance(value, dict):
                self.problem(f"group.{name}", "expected a table")
                continue
            self.unknown(value, where, GROUP_KEYS)
            recipe = self.text(value, "recipe", where, "") or None
            append = self.text(value, "append", where, "") or None
            path = None
            if recipe:
                path = Path(os.path.normpath(self.path.parent / recipe))
                if not path.is_file():
                    self.problem(f"{where}recipe", f"recipe '{recipe}' does not exist "
                                 f"(looked for {path})")
            groups[name] = Group(name, path, append)
            for key, problem in group_problems(groups[name]):
                self.problem(f"group.{name}{key}", problem)
        return groups

    def hosts(self, items: Any, groups: Mapping[str, Group]) -> tuple[Host, ...]:
        if not isinstance(items, list):
            self.problem("host", "expected an array of tables ([[host]])")
            return ()
        hosts, rows = [], []
        for i, item in enumerate(items):
            where = f"host[{i}]."
            if not isinstance(item, dict):
                self.problem(f"host[{i}]", "expected a table")
                continue
            self.unknown(item, where, HOST_KEYS)
            name = self.checked(item, "name", where, None, name_problem)
            if name and self.refused(f"{where}name", fqdn_problem(name, self.domain)):
                name = None
            mac = self.checked(item, "mac", where, None, mac_problem)
            mac = mac.lower().replace("-", ":") if mac else None
            ip = self.address(item, "ip", where)
            second = self.address(item, "second_ip", where)
            group = item.get("group")
            if group is not None and not isinstance(group, str):
                self.problem(f"{where}group", f"expected a string, got {type_name(group)}")
                group = None
            for key, problem in host_problems(where, ip, second, group, self.place, groups):
                self.problem(key, problem)
            rows.append((where, unique_keys(name, mac, ip, second)))
            host = self.made(where, partial(Host, name, mac, ip, second, group)) \
                if name and mac and ip and second else None
            hosts += [host] if host else []
        for key, problem in duplicates(rows):
            self.problem(key, problem)
        return tuple(hosts)
