"""Reading an inventory: the TOML file walked with the types' own rules, every problem reported
at once with its key path."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from ..errors import RecipeError, boundary
from ..formats.tomlfile import CONTROL, control_characters, read_toml, type_name
from .bmc import BMC_KEYS, CLUSTER_BMC_KEYS, cluster_defaults, read_power
from .discovery import DiscoveryRange, parse_range
from .inventory import (
    Cluster,
    Group,
    Host,
    Inventory,
    Place,
    group_problems,
    host_problems,
    log_names,
)
from .values import (
    BOOT_SERVERS_MAX,
    PATH_KEYS,
    domain_problem,
    duplicates,
    fqdn_problem,
    http_url_problem,
    inside_problem,
    mac_problem,
    name_pattern_problem,
    name_problem,
    normal_mac,
    options_problem,
    path_problem,
    port_problem,
    tag_problem,
    unique_keys,
)

T = TypeVar("T")


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
    "http_url", "name_pattern", "discovery", *CLUSTER_BMC_KEYS,
}
HOST_KEYS = {"name", "mac", "ip", "second_ip", "group", *BMC_KEYS}
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
        table = data.get("cluster")
        power = cluster_defaults(table if isinstance(table, dict) else {}, self.problem)
        hosts = self.hosts(data.get("host", []), groups, power)
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
        discovery = self.discovery(table, subnet, router, boot_servers)
        pattern = self.checked(table, "name_pattern", w, "server{n}", name_pattern_problem)
        if (domain is None or boot is None or subnet is None or router is None
                or external is None or gateway is None or log_host is None or nfs_server is None
                or None in paths.values() or clients is None or options is None
                or tag is None or boot_servers is None or pattern is None
                or len(self.problems) > before):
            return None
        export, mountpoint, tftp_root, log_dir = (str(paths[key]) for key in PATH_KEYS)
        return self.made(w, partial(
            Cluster, domain, boot, subnet, router, external, gateway, log_host, nfs_server,
            export, mountpoint, clients, options, tftp_root, log_dir, port, tag, boot_servers,
            http_url, discovery, pattern))

    def discovery(self, table: Mapping[str, Any], subnet: IPv4Network | None,
                  router: IPv4Address | None, servers: tuple[IPv4Address, ...] | None
                  ) -> DiscoveryRange | None:
        """`discovery`: the range unknown machines get a short lease from (none: no lease)."""
        text = self.text(table, "discovery", "cluster.", "") or None
        if text is None:
            return None
        taken = [("internal_router", router)] if router else []
        taken += [(f"boot server {server}", server) for server in servers or ()]
        found, problem = parse_range(text, subnet, taken)
        self.refused("cluster.discovery", problem or None)
        return found

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

    def hosts(self, items: Any, groups: Mapping[str, Group],
              power: Mapping[str, tuple[Any, str]]) -> tuple[Host, ...]:
        if not isinstance(items, list):
            self.problem("host", "expected an array of tables ([[host]])")
            return ()
        hosts, rows = [], []
        files: dict[str, tuple[str, str]] = {}  # log file (lower case) -> host, name
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
            mac = normal_mac(mac) if mac else None
            ip = self.address(item, "ip", where)
            second = self.address(item, "second_ip", where)
            group = item.get("group")
            if group is not None and not isinstance(group, str):
                self.problem(f"{where}group", f"expected a string, got {type_name(group)}")
                group = None
            for key, problem in host_problems(where, ip, second, group, self.place, groups):
                self.problem(key, problem)
            access = read_power(item, where, power, self.path.parent, self.problem)
            rows.append((where, {**unique_keys(name, mac, ip, second),
                                 "bmc": access.bmc.url if access and access.bmc else None}))
            host = self.made(where, partial(Host, name, mac, ip, second, group, access)) \
                if name and mac and ip and second else None
            hosts += [host] if host else []
            if name:
                self.log_files(f"host[{i}]", name, files)
        for key, problem in duplicates(rows):
            self.problem(key, problem)
        return tuple(hosts)

    def log_files(self, where: str, name: str, files: dict[str, tuple[str, str]]) -> None:
        """Each host's log files are its own: `web` and `web-err` would share `web-err.log`."""
        for file in log_names(name):
            other = files.setdefault(file.lower(), (where, name))
            if other[0] != where and other[1].lower() != name.lower():  # not a duplicate name
                self.problem(f"{where}.name", f"'{name}' and {other[0]} '{other[1]}' would "
                             f"share the log host's file {file}; rename one")
                return
