"""Kea DHCPv4 (ISC's maintained successor to dhcpd): `kea-dhcp4.conf` from an inventory.

The same service as the dhcpd config: option 187 `second-ip`, one reservation per node (fixed
address, FQDN as host name, option 187), the internal subnet with its router, the boot program
chosen by client class (the rules of `bootfile`), and nothing for an unknown client (no pool).

With two boot servers the inventory gets a hot-standby pair: one config per server, identical
but for `this-server-name` and its own address as next-server (so after a failover the nodes
fetch their boot files from the server that answered). The peers exchange heartbeats and lease
updates over the HA hook's own HTTP listener (Kea's HA+MT mode, since Kea 2.0), so neither needs
kea-ctrl-agent. Pure: inventory in, JSON text out.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from typing import Any

from ..boot.bootfile import DEFAULT, Client, boot_rules
from ..config import discovery
from ..config.inventory import Inventory
from .generated import DISCOVERY_CONFIG, LEASE_SECONDS, discovery_script, header

CONF = "kea-dhcp4.conf"
HA_CONFS = ("kea-dhcp4-primary.conf", "kea-dhcp4-standby.conf")
"""One config per server of a pair (`boot_servers`), in the inventory's order."""
ROLES = ("primary", "standby")

# Debian's packaged paths (kea-dhcp4-server 2.2, amd64): the daemon's defaults.
LEASE_FILE = "/var/lib/kea/kea-leases4.csv"
CONTROL_SOCKET = "/run/kea/kea4-ctrl-socket"
HOOKS_DIR = "/usr/lib/x86_64-linux-gnu/kea/hooks"
# An interface that is down (no carrier yet) when Kea starts would get no socket, and Kea
# would never serve on it: retry every 5 s for a day instead.
SOCKET_RETRIES = 17280
SOCKET_RETRY_MS = 5000
HA_PORT = 8001
"""The HA hook's own listener; 8000 stays free for a kea-ctrl-agent, should one be wanted."""

# Failure detection. A peer that missed heartbeats for max-response-delay is down; the standby
# then serves at once (max-unacked-clients 0) rather than first waiting for unanswered clients.
# That risks both answering during a network split, which is harmless here: every node has a
# reservation, so both servers hand a node the same address and options.
HEARTBEAT_MS = 1000
MAX_RESPONSE_MS = 3000
MAX_ACK_MS = 1000

LINE = 100  # the line width of `dumps`

SECOND_IP = {"name": "second-ip", "code": 187, "type": "ipv4-address", "space": "dhcp4"}
CONFIGFILE = {"name": "pxelinux-configfile", "code": discovery.PXELINUX_CONFIGFILE,
              "type": "string", "space": "dhcp4"}
DISCOVERY = "discovery"
"""The class of a client without a reservation (Kea's UNKNOWN), with a discovery range."""


def kea_files(inventory: Inventory) -> dict[str, str]:
    """`kea-dhcp4.conf`, or one config per server of a hot-standby pair."""
    servers = inventory.cluster.boot_servers
    if len(servers) == 1:
        return {CONF: kea_dhcp4_conf(inventory, servers[0])}
    return {name: kea_dhcp4_conf(inventory, server)
            for name, server in zip(HA_CONFS, servers, strict=True)}


def kea_dhcp4_conf(inventory: Inventory, server: IPv4Address) -> str:
    """The config of the boot server at `server` (one of `boot_servers`)."""
    dhcp4: dict[str, Any] = {
        "interfaces-config": {"interfaces": ["*"], "service-sockets-max-retries": SOCKET_RETRIES,
                              "service-sockets-retry-wait-time": SOCKET_RETRY_MS},
        "control-socket": {"socket-type": "unix", "socket-name": CONTROL_SOCKET},
        "lease-database": {"type": "memfile", "persist": True, "name": LEASE_FILE,
                           "lfc-interval": 3600},
        "valid-lifetime": LEASE_SECONDS,
        "option-def": [SECOND_IP, CONFIGFILE] if inventory.cluster.discovery else [SECOND_IP],
        "client-classes": client_classes(inventory.cluster.http_url,
                                         inventory.cluster.discovery is not None),
        "subnet4": [subnet(inventory, server)],
    }
    if len(inventory.cluster.boot_servers) > 1:
        dhcp4["multi-threading"] = {"enable-multi-threading": True, "thread-pool-size": 2,
                                    "packet-queue-size": 16}
        dhcp4["hooks-libraries"] = high_availability(inventory, server)
    return header(inventory, "//") + dumps({"Dhcp4": dhcp4}) + "\n"


def dumps(value: Any, indent: str = "", column: int = 0) -> str:
    """JSON indented by two, each map or list that fits in the line (from `column`) on one."""
    flat = json.dumps(value)
    if column + len(flat) <= LINE or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            prefix = f"{inner}{json.dumps(key)}: "
            items.append(prefix + dumps(item, inner, len(prefix)))
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    return ("[\n" + ",\n".join(inner + dumps(item, inner, len(inner)) for item in value)
            + f"\n{indent}]")


def client_classes(http_url: str | None, discover: bool = False) -> list[dict[str, Any]]:
    """One class per boot rule; the tests exclude each other, so no class order matters.

    With `discover`, the class of an unknown client (no reservation): a short lease, option 209
    sent unasked, and for iPXE the discovery script (the known iPXE class then takes only the
    known, so exactly one class names an iPXE client's boot file).
    """
    ipxe = "substring(option[77].hex,0,4) == 'iPXE'"
    classes: list[dict[str, Any]] = []
    if discover:
        classes.append({"name": DISCOVERY, "test": "member('UNKNOWN')",
                        "valid-lifetime": discovery.LEASE_SECONDS,
                        "option-data": [{"name": CONFIGFILE["name"], "data": DISCOVERY_CONFIG,
                                         "always-send": True}]})
    for rule in boot_rules(http_url):
        if rule.client is Client.IPXE:
            test = ipxe
            if discover and http_url:
                classes.append({"name": f"{DISCOVERY}-{rule.client}",
                                "test": f"member('UNKNOWN') and {ipxe}",
                                "boot-file-name": discovery_script(http_url)})
                test = f"member('KNOWN') and {ipxe}"
        else:
            test = " or ".join(f"option[93].hex == 0x{arch:04x}" for arch in rule.architectures)
            if http_url:
                test = f"({test}) and not ({ipxe})"
        classes.append({"name": rule.client.value, "test": test, "boot-file-name": rule.file})
    return classes


def subnet(inventory: Inventory, server: IPv4Address) -> dict[str, Any]:
    c = inventory.cluster
    options = [{"name": "routers", "data": str(c.internal_router)},
               {"name": "broadcast-address", "data": str(c.internal_subnet.broadcast_address)}]
    if c.domain:
        options.append({"name": "domain-name", "data": c.domain})
    pools = ({"pools": [{"pool": f"{c.discovery.first} - {c.discovery.last}",
                         "client-class": "UNKNOWN"}]} if c.discovery else {})
    return {
        "id": 1,
        "subnet": str(c.internal_subnet),
        "next-server": str(server),
        "boot-file-name": DEFAULT,
        "option-data": options,
        **pools,
        "reservations": [
            {"hw-address": host.mac, "ip-address": str(host.ip),
             "hostname": host.fqdn(c.domain),
             "option-data": [{"name": "second-ip", "data": str(host.second_ip),
                              "always-send": True}]}
            for host in inventory.hosts
        ],
    }


def high_availability(inventory: Inventory, server: IPv4Address) -> list[dict[str, Any]]:
    """The hooks of a hot-standby pair: lease commands (which HA needs) and HA itself."""
    servers = inventory.cluster.boot_servers
    peers = [{"name": role, "url": f"http://{address}:{HA_PORT}/", "role": role,
              "auto-failover": True} for role, address in zip(ROLES, servers, strict=True)]
    ha = {
        "this-server-name": ROLES[servers.index(server)],
        "mode": "hot-standby",
        "heartbeat-delay": HEARTBEAT_MS,
        "max-response-delay": MAX_RESPONSE_MS,
        "max-ack-delay": MAX_ACK_MS,
        "max-unacked-clients": 0,
        "multi-threading": {"enable-multi-threading": True, "http-dedicated-listener": True,
                            "http-listener-threads": 2, "http-client-threads": 2},
        "peers": peers,
    }
    return [{"library": f"{HOOKS_DIR}/libdhcp_lease_cmds.so"},
            {"library": f"{HOOKS_DIR}/libdhcp_ha.so",
             "parameters": {"high-availability": [ha]}}]
