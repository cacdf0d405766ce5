"""The rules of an inventory's values, shared by its types (`inventory.Cluster`, `Host`, ...,
checked however they are made) and its reader (which reports them all at once, by key path).

Each value lands somewhere that gives characters a meaning: dhcpd, Kea and dnsmasq configs,
rsyslog rules, /etc/exports, the shell-sourced tftpd-hpa defaults, the node's hostname. Each
`*_problem` function says what is wrong with one value (None: nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network

MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$", re.IGNORECASE)
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
TAG = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
# Paths land in rsyslog rules (where % opens a property and \ an escape), /etc/exports, the
# shell-sourced tftpd-hpa defaults ($ and ` expand there) and the image's scripts: plain only.
PATH_CHARS = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
# The URL lands in quoted DHCP strings, dnsmasq's comma-separated options and nginx's `listen`,
# `server_name` and `location` lines: plain only, its host a name or an address, its port one.
HTTP_URL = re.compile(r"^http://(?P<host>[A-Za-z0-9.-]+)(:(?P<port>[0-9]{1,5}))?"
                      r"(?P<path>/([A-Za-z0-9._~+@-]+/)*)$")
BOOT_SERVERS_MAX = 2  # Kea's hot-standby pair
HOST_NAME_MAX = 64  # Linux: the node sets its hostname to the FQDN from DHCP
EXPORT_OPTIONS = re.compile(r"[a-z_]+(=[\w.-]+)?(,[a-z_]+(=[\w.-]+)?)*")
ADDRESS_KEYS = ("boot_server", "internal_router", "external_gateway", "log_host", "nfs_server")
NETWORK_KEYS = ("internal_subnet", "external_network", "nfs_clients")
PATH_KEYS = ("nfs_export", "nfs_mountpoint", "tftp_root", "log_dir")


def fqdn_of(name: str, domain: str) -> str:
    """The name DHCP hands the node (`option host-name`), which it sets as its hostname."""
    return f"{name}.{domain}" if domain else name


def domain_problem(domain: object) -> str | None:
    if isinstance(domain, str) and (not domain or all(LABEL.match(p) for p in domain.split("."))):
        return None
    return f"{domain!r} is not a DNS domain name" if not isinstance(domain, str) else \
        f"'{domain}' is not a DNS domain name"


def path_problem(value: object) -> str | None:
    if isinstance(value, str) and PATH_CHARS.match(value):
        return None
    return (f"'{value}' is not an absolute path of letters, digits and ._+@-/ (blanks, quotes, "
            "% \\ $ and the like mean something to rsyslog, dhcpd or a shell)")


def options_problem(options: object) -> str | None:
    if isinstance(options, str) and EXPORT_OPTIONS.fullmatch(options):
        return None
    return f"'{options}' is not an exports option list like 'ro,sync'"


def port_problem(port: object) -> str | None:
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return None
    return f"{port!r} is not a port number"


def tag_problem(tag: object) -> str | None:
    return None if isinstance(tag, str) and TAG.match(tag) else f"'{tag}' is not a syslog tag"


def http_url_problem(url: object) -> str | None:
    if url is None:
        return None
    found = HTTP_URL.match(url) if isinstance(url, str) else None
    if not found:
        return (f"'{url}' is not an http:// URL ending in '/' (like 'http://10.1.1.1/'; "
                "letters, digits and ._~+@- in the path)")
    host, port, path = found["host"], found["port"], found["path"]
    if not is_ipv4(host) and not (all(LABEL.match(label) for label in host.split("."))
                                  and not host.rsplit(".", 1)[-1].isdigit()):
        return f"'{url}': '{host}' is neither an IPv4 address nor a DNS name"
    if port is not None and port_problem(int(port)):
        return f"'{url}': {port} is not a port number"
    if "/." in path:
        return f"'{url}': a part of its path starts with '.' (hidden, or '.' and '..')"
    return None


def is_ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def inside_problem(address: IPv4Address | None, network: IPv4Network | None, what: str
                   ) -> str | None:
    if address is None or network is None:
        return None
    if address not in network:
        return f"{address} is outside the {what} {network}"
    if address in (network.network_address, network.broadcast_address):
        return f"{address} is the {what}'s network or broadcast address"
    return None


def name_pattern_problem(pattern: object) -> str | None:
    """`[cluster] name_pattern`: a host name with `{n}` once in it (enroll's names)."""
    if isinstance(pattern, str) and pattern.count("{n}") == 1 and not name_problem(
            pattern.replace("{n}", "1")):
        return None
    return f"{pattern!r} is not a host name with {{n}} once in it, like 'server{{n}}'"


def name_problem(name: object) -> str | None:
    if isinstance(name, str) and LABEL.match(name):
        return None
    return (f"'{name}' is not a valid host name (a DNS label: letters, digits and inner "
            "hyphens, at most 63)")


def fqdn_problem(name: str, domain: str) -> str | None:
    fqdn = fqdn_of(name, domain)
    if len(fqdn) <= HOST_NAME_MAX:
        return None
    return (f"'{fqdn}' has {len(fqdn)} characters; the node sets it as its hostname, which "
            f"Linux limits to {HOST_NAME_MAX}")


def normal_mac(mac: str) -> str:
    """A MAC as tcbuild writes and compares it: lower case, colon separated."""
    return mac.lower().replace("-", ":")


def mac_problem(value: object) -> str | None:
    """What is wrong with a MAC address as written (`-` or `:` separated, any case)."""
    if not isinstance(value, str) or not MAC.match(value):
        return f"'{value}' is not a MAC address like 52:54:00:12:34:56"
    mac = normal_mac(value)
    if int(mac[:2], 16) & 1:
        return (f"{mac} is a multicast address; no network card has one (the lowest bit of "
                "the first byte must be 0)")
    if mac == "00:00:00:00:00:00":
        return "00:00:00:00:00:00 is not a card's address"
    return None


def normal_mac_problem(mac: str) -> str | None:
    normal = normal_mac(mac)
    return None if mac == normal else f"'{mac}' is not written as {normal}"


def place_problems(where: str, ip: IPv4Address | None, second: IPv4Address | None,
                   internal: IPv4Network, external: IPv4Network, own: set[IPv4Address]
                   ) -> Iterator[tuple[str, str]]:
    """(key, problem) of a host's addresses: in the cluster's networks, not its own."""
    for key, address, network, what in (("ip", ip, internal, "internal subnet"),
                                        ("second_ip", second, external, "external network")):
        problem = inside_problem(address, network, what)
        if problem:
            yield f"{where}{key}", problem
        if address in own:
            yield f"{where}{key}", f"{address} is the cluster's own address"


def unique_keys(name: str | None, mac: str | None, ip: IPv4Address | None,
                 second: IPv4Address | None) -> dict[str, str | None]:
    return {"name": name.lower() if name else None, "mac": mac,
            "ip": str(ip) if ip else None, "second_ip": str(second) if second else None}


def duplicates(rows: Iterable[tuple[str, Mapping[str, str | None]]]
               ) -> Iterator[tuple[str, str]]:
    """(key, problem) for each name, MAC or address a host shares with an earlier one; rows
    are (`host[i].`, `unique_keys`)."""
    seen: dict[str, dict[str, str]] = {}
    for where, keys in rows:
        for key, unique in keys.items():
            if unique is None:
                continue
            first = seen.setdefault(key, {}).setdefault(unique, where.rstrip("."))
            if first != where.rstrip("."):
                yield f"{where}{key}", f"{unique} is also used by {first}"
