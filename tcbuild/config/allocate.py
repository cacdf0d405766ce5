"""Enrolling and retiring planned: a new host's name and addresses, chosen or checked. Pure.

A name comes from `[cluster] name_pattern` ("server{n}" by default): the next number after the
highest one a host's name already has. An address is the next free one after the highest a host
already has in its network (the internal subnet, the external network), never the network or
broadcast address, the router, a boot server, the external gateway, an address in use, or the
discovery range (`Cluster.discovery`). Wanting more than the network holds is bad input: one
line, nothing written. The MAC and name rules are the inventory's (`values`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from ..errors import InputError
from .inventory import Host, Inventory
from .values import mac_problem, name_problem, normal_mac


@dataclass(frozen=True)
class Request:
    """One machine to enroll: its MAC, and whatever the operator chose (None: allocate)."""

    mac: str
    name: str | None = None
    ip: str | None = None
    second_ip: str | None = None
    group: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # e.g. bmc = "ipmi://10.1.2.5"


@dataclass(frozen=True)
class NewHost:
    """A host as it will be written: the keys of its `[[host]]` table, in order."""

    name: str
    mac: str
    ip: IPv4Address
    second_ip: IPv4Address
    group: str | None
    extra: Mapping[str, str]

    def table(self) -> dict[str, str]:
        keys = {"name": self.name, "mac": self.mac, "ip": str(self.ip),
                "second_ip": str(self.second_ip)}
        if self.group:
            keys["group"] = self.group
        return {**keys, **self.extra}

    def as_json(self) -> dict[str, str]:
        return self.table()


def checked_mac(text: str) -> str:
    """`52-54-00-AB-CD-EF` -> `52:54:00:ab:cd:ef`; a malformed, multicast or zero MAC is bad
    input (the reader's rules)."""
    problem = mac_problem(text)
    if problem:
        raise InputError(problem)
    return normal_mac(text)


class Allocator:
    """Names and addresses for new hosts, each taken once chosen (several in one write)."""

    def __init__(self, inventory: Inventory) -> None:
        c = inventory.cluster
        self.inventory = inventory
        self.pattern = c.name_pattern
        self.names = {h.name.lower() for h in inventory.hosts}
        self.macs = {h.mac: h.name for h in inventory.hosts}
        self.used: dict[IPv4Address, str] = {}
        for h in inventory.hosts:
            self.used[h.ip] = f"host {h.name}"
            self.used[h.second_ip] = f"host {h.name}"
        own = {c.internal_router: "the internal router", c.external_gateway: "the external gateway",
               **{server: "a boot server" for server in c.boot_servers}}
        self.reserved = {**own, **self.used}

    def take(self, request: Request) -> NewHost:
        mac = checked_mac(request.mac)
        if mac in self.macs:
            raise InputError(f"MAC {mac} is already host {self.macs[mac]}'s")
        name = request.name if request.name is not None else self.next_name()
        problem = name_problem(name)
        if problem:
            raise InputError(f"name {problem}")
        if name.lower() in self.names:
            raise InputError(f"name {name} is already taken by a host")
        c = self.inventory.cluster
        ip = self.address(request.ip, c.internal_subnet, "ip", "internal subnet")
        second = self.address(request.second_ip, c.external_network, "second_ip",
                              "external network")
        if request.group is not None and request.group not in self.inventory.groups:
            raise InputError(f"group {request.group!r} is not in the inventory (defined: "
                             f"{', '.join(sorted(self.inventory.groups)) or 'none'})")
        host = NewHost(name, mac, ip, second, request.group, dict(request.extra))
        self.names.add(name.lower())
        self.macs[mac] = name
        for address in (ip, second):
            self.used[address] = self.reserved[address] = f"host {name}"
        return host

    def next_name(self) -> str:
        before, after = self.pattern.split("{n}")
        number = re.compile(rf"^{re.escape(before)}([0-9]+){re.escape(after)}$", re.IGNORECASE)
        found = [int(m[1]) for name in self.names if (m := number.match(name))]
        n = max(found, default=0) + 1
        while self.pattern.replace("{n}", str(n)).lower() in self.names:
            n += 1
        return self.pattern.replace("{n}", str(n))

    def address(self, wanted: str | None, network: IPv4Network, key: str, what: str
                ) -> IPv4Address:
        if wanted is not None:
            try:
                address = IPv4Address(wanted)
            except ValueError:
                raise InputError(f"{key} {wanted!r} is not an IPv4 address") from None
            problem = self.refused(address, network)
            if problem:
                raise InputError(f"{key} {address}: {problem}")
            return address
        taken = [a for a in self.used if a in network]
        start = int(max(taken)) + 1 if taken else int(network.network_address) + 1
        end = int(network.broadcast_address)
        for value in (*range(start, end), *range(int(network.network_address) + 1, start)):
            if self.refused(IPv4Address(value), network) is None:
                return IPv4Address(value)
        raise InputError(f"{key}: the {what} {network} has no free address left (hosts, "
                         "router, boot servers, gateway and discovery range take them all)")

    def refused(self, address: IPv4Address, network: IPv4Network) -> str | None:
        """Why `address` may not be a new host's in `network`, or None."""
        if address not in network:
            return f"outside {network}"
        if address in (network.network_address, network.broadcast_address):
            return f"the network or broadcast address of {network}"
        if address in self.reserved:
            return f"already used by {self.reserved[address]}"
        discovery = self.inventory.cluster.discovery
        if discovery is not None and address in discovery:
            return f"inside the discovery range {discovery}"
        return None


def plan_hosts(inventory: Inventory, requests: Sequence[Request]) -> list[NewHost]:
    """The hosts to add for `requests`, in order, each with what was asked or allocated."""
    allocator = Allocator(inventory)
    return [allocator.take(request) for request in requests]


def find_host(inventory: Inventory, name: str) -> Host:
    """The host called `name` (case-insensitive); not there is bad input."""
    for host in inventory.hosts:
        if host.name.lower() == name.lower():
            return host
    raise InputError(f"{inventory.path}: no host named {name!r} (hosts: "
                     f"{', '.join(h.name for h in inventory.hosts) or 'none'})")
