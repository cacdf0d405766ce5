"""The cluster inventory: boot-server settings and one entry per node, validated all at once.

One file feeds the boot server's configuration (`server`), the image's templates (its cluster
values become template variables) and, later, per-host boot configs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import RecipeError, boundary
from ..formats.tomlfile import CONTROL, control_characters, control_problem, key_path, read_toml
from .bmc import BMC_KEYS, CLUSTER_BMC_KEYS, PowerAccess, cluster_defaults, read_power

MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$", re.IGNORECASE)
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
TAG = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
# Paths land in rsyslog rules (where % opens a property and \ an escape), /etc/exports, the
# shell-sourced tftpd-hpa defaults ($ and ` expand there) and the image's scripts: plain only.
PATH_CHARS = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
# The URL lands in quoted DHCP strings and in dnsmasq's comma-separated options: plain only.
HTTP_URL = re.compile(r"^http://[A-Za-z0-9.-]+(:[0-9]{1,5})?/([A-Za-z0-9._~+@-]+/)*$")
BOOT_SERVERS_MAX = 2  # Kea's hot-standby pair
HOST_NAME_MAX = 64  # Linux: the node sets its hostname to the FQDN from DHCP


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

    def fqdn(self, domain: str) -> str:
        return self.fqdn_of(self.name, domain)

    @staticmethod
    def fqdn_of(name: str, domain: str) -> str:
        """The name DHCP hands the node (`option host-name`), which it sets as its hostname."""
        return f"{name}.{domain}" if domain else name


@dataclass(frozen=True)
class Inventory:
    path: Path
    cluster: Cluster
    hosts: tuple[Host, ...]
    groups: Mapping[str, Group]

    def __post_init__(self) -> None:
        """A group's append line is a kernel line, however the inventory was made."""
        problems = [f"{self.path}: {key_path('group', name)}.append: {problem}"
                    for name, group in self.groups.items()
                    if (problem := control_problem(group.append or ""))]
        if problems:
            raise RecipeError(problems)


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
    "http_url", *CLUSTER_BMC_KEYS,
}
HOST_KEYS = {"name", "mac", "ip", "second_ip", "group", *BMC_KEYS}
GROUP_KEYS = {"recipe", "append"}


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        self.tainted: set[str] = set()  # keys whose control characters are reported already

    def problem(self, key: str, message: str) -> None:
        if key not in self.tainted and not CONTROL.search(key):
            self.problems.append(f"{self.path}: {key}: {message}")

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
        table = data.get("cluster")
        power = cluster_defaults(table if isinstance(table, dict) else {}, self.problem)
        hosts = self.hosts(data.get("host", []), cluster, groups, power)
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
            self.problem(f"{where}{key}", f"expected a string, got {type(value).__name__}")
        return None

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

    def inside(self, key: str, address: IPv4Address | None, network: IPv4Network | None,
               what: str) -> None:
        if address is None or network is None:
            return
        if address not in network:
            self.problem(key, f"{address} is outside the {what} {network}")
        elif address in (network.network_address, network.broadcast_address):
            self.problem(key, f"{address} is the {what}'s network or broadcast address")

    # -- tables --------------------------------------------------------------------------------

    def cluster(self, table: Any) -> Cluster | None:
        if not isinstance(table, dict):
            self.problem("cluster", "missing table" if table is None else "expected a table")
            return None
        self.unknown(table, "cluster.", CLUSTER_KEYS)
        w = "cluster."
        domain = self.text(table, "domain", w, "")
        if domain and not all(LABEL.match(part) for part in domain.split(".")):
            self.problem("cluster.domain", f"'{domain}' is not a DNS domain name")
        boot = self.address(table, "boot_server", w)
        subnet = self.network(table, "internal_subnet", w)
        router = self.address(table, "internal_router", w)
        external = self.network(table, "external_network", w)
        gateway = self.address(table, "external_gateway", w)
        boot_text = str(boot) if boot else None
        log_host = self.address(table, "log_host", w, boot_text)
        nfs_server = self.address(table, "nfs_server", w, boot_text)
        clients = self.network(table, "nfs_clients", w, str(subnet) if subnet else None)
        self.inside("cluster.boot_server", boot, subnet, "internal subnet")
        self.inside("cluster.internal_router", router, subnet, "internal subnet")
        self.inside("cluster.external_gateway", gateway, external, "external network")
        export = self.text(table, "nfs_export", w)
        mountpoint = self.text(table, "nfs_mountpoint", w, "/mnt/gameserver")
        tftp_root = self.text(table, "tftp_root", w, "/tftpboot")
        log_dir = self.text(table, "log_dir", w, "/var/log/remote")
        for key, value in (("nfs_export", export), ("nfs_mountpoint", mountpoint),
                           ("tftp_root", tftp_root), ("log_dir", log_dir)):
            if value is not None and not PATH_CHARS.match(value):
                self.problem(f"cluster.{key}", f"'{value}' is not an absolute path of letters, "
                             "digits and ._+@-/ (blanks, quotes, % \\ $ and the like mean "
                             "something to rsyslog, dhcpd or a shell)")
        options = self.text(table, "nfs_export_options", w, "ro,sync,no_subtree_check,root_squash")
        if options is not None and not re.fullmatch(r"[a-z_]+(=[\w.-]+)?(,[a-z_]+(=[\w.-]+)?)*",
                                                    options):
            self.problem("cluster.nfs_export_options", f"'{options}' is not an exports option "
                         "list like 'ro,sync'")
        port = table.get("syslog_port", 514)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            self.problem("cluster.syslog_port", f"{port!r} is not a port number")
            port = 514
        tag = self.text(table, "game_log_tag", w, "master")
        if tag is not None and not TAG.match(tag):
            self.problem("cluster.game_log_tag", f"'{tag}' is not a syslog tag")
        boot_servers = self.boot_servers(table, boot, subnet)
        http_url = self.text(table, "http_url", w, "") or None
        if http_url is not None and not HTTP_URL.match(http_url):
            self.problem("cluster.http_url", f"'{http_url}' is not an http:// URL ending in '/' "
                         "(like 'http://10.1.1.1/'; letters, digits and ._~+@- in the path)")
        if (domain is None or boot is None or subnet is None or router is None
                or external is None or gateway is None or log_host is None or nfs_server is None
                or export is None or mountpoint is None or clients is None or options is None
                or tftp_root is None or log_dir is None or tag is None or boot_servers is None):
            return None
        return Cluster(domain, boot, subnet, router, external, gateway, log_host, nfs_server,
                       export, mountpoint, clients, options, tftp_root, log_dir, port, tag,
                       boot_servers, http_url)

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
            self.inside(f"{key}[{i}]", address, subnet, "internal subnet")
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
            if not recipe and not append:
                self.problem(f"group.{name}", "needs a recipe or an append line")
            groups[name] = Group(name, path, append)
        return groups

    def hosts(self, items: Any, cluster: Cluster | None,
              groups: Mapping[str, Group], power: Mapping[str, tuple[Any, str]]
              ) -> tuple[Host, ...]:
        if not isinstance(items, list):
            self.problem("host", "expected an array of tables ([[host]])")
            return ()
        hosts = []
        seen: dict[str, dict[str, str]] = {"name": {}, "mac": {}, "ip": {}, "second_ip": {},
                                           "bmc": {}}
        files: dict[str, tuple[str, str]] = {}  # log file (lower case) -> host, name
        for i, item in enumerate(items):
            where = f"host[{i}]."
            if not isinstance(item, dict):
                self.problem(f"host[{i}]", "expected a table")
                continue
            self.unknown(item, where, HOST_KEYS)
            name = self.text(item, "name", where)
            if name is not None and not LABEL.match(name):
                self.problem(f"{where}name", f"'{name}' is not a valid host name (a DNS label: "
                             "letters, digits and inner hyphens, at most 63)")
                name = None
            fqdn = Host.fqdn_of(name, cluster.domain) if name and cluster else ""
            if len(fqdn) > HOST_NAME_MAX:
                self.problem(f"{where}name", f"'{fqdn}' has {len(fqdn)} characters; the node "
                             f"sets it as its hostname, which Linux limits to {HOST_NAME_MAX}")
                name = None
            mac = self.mac(item, where)
            ip = self.address(item, "ip", where)
            second = self.address(item, "second_ip", where)
            if cluster is not None:
                self.inside(f"{where}ip", ip, cluster.internal_subnet, "internal subnet")
                self.inside(f"{where}second_ip", second, cluster.external_network,
                            "external network")
                own = {cluster.internal_router, cluster.boot_server, cluster.external_gateway,
                       *cluster.boot_servers}
                for key, value in (("ip", ip), ("second_ip", second)):
                    if value in own:
                        self.problem(f"{where}{key}", f"{value} is the cluster's own address")
            group = item.get("group")
            if group is not None and group not in groups:
                self.problem(f"{where}group", f"no group '{group}' (defined: "
                             f"{', '.join(sorted(groups)) or 'none'})")
            access = read_power(item, where, power, self.path.parent, self.problem)
            keys = {"name": name.lower() if name else None, "mac": mac,
                    "ip": str(ip) if ip else None, "second_ip": str(second) if second else None,
                    "bmc": access.bmc.url if access and access.bmc else None}
            for key, unique in keys.items():
                if unique is None:
                    continue
                if unique in seen[key]:
                    self.problem(f"{where}{key}", f"{unique} is also used by {seen[key][unique]}")
                else:
                    seen[key][unique] = f"host[{i}]"
            if name and mac and ip and second:
                hosts.append(Host(name, mac, ip, second, group, access))
            if name:
                self.log_files(f"host[{i}]", name, files)
        return tuple(hosts)

    def log_files(self, where: str, name: str, files: dict[str, tuple[str, str]]) -> None:
        """Each host's log files are its own: `web` and `web-err` would share `web-err.log`."""
        for file in log_names(name):
            other = files.setdefault(file.lower(), (where, name))
            if other[0] != where and other[1].lower() != name.lower():  # not a duplicate name
                self.problem(f"{where}.name", f"'{name}' and {other[0]} '{other[1]}' would "
                             f"share the log host's file {file}; rename one")
                return

    def mac(self, item: Mapping[str, Any], where: str) -> str | None:
        value = self.text(item, "mac", where)
        if value is None:
            return None
        if not MAC.match(value):
            self.problem(f"{where}mac", f"'{value}' is not a MAC address like 52:54:00:12:34:56")
            return None
        mac = value.lower().replace("-", ":")
        first = int(mac[:2], 16)
        if first & 1:
            self.problem(f"{where}mac", f"{mac} is a multicast address; no network card has one "
                         "(the lowest bit of the first byte must be 0)")
            return None
        if mac == "00:00:00:00:00:00":
            self.problem(f"{where}mac", "00:00:00:00:00:00 is not a card's address")
            return None
        return mac

