"""`enroll` and `retire`: a machine joins the pool with one command, or leaves it.

The inventory gets (or loses) one `[[host]]` table, keeping the rest of the file as it was
(config/invedit.py); the new text must validate before it replaces the file. With `apply`, the
boot server's configs are regenerated and put live (bootserver/apply.py) before the inventory
is replaced: a daemon that refuses them gets its previous files back, those told before it are
told their previous configs again, and the inventory stays as it was. With TFTP roots, the
host's per-MAC config is written (or removed); an enrolled host is then power-cycled through its
BMC if it has one, else the result says to reboot it. `enroll_new` enrolls every machine the
fleet view lists as new in one write. A retired host's logs are kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bootserver import apply, kea
from ..bootserver.files import Dhcp, server_files
from ..config.allocate import NewHost, Request, find_host, plan_hosts
from ..config.invedit import staged, with_hosts, without_host
from ..config.inventory import Inventory
from ..config.inventoryfile import load_inventory
from ..errors import InputError, TcbuildError, boundary
from ..fleet.discover import discovered
from ..fleet.power import power
from ..tftproot.hostconfig import remove_host_config, write_host_config


@dataclass(frozen=True)
class ApplyOptions:
    """Which DHCP server this boot server runs, and where its daemons' files are."""

    dhcp: Dhcp
    installed: apply.Installed = field(default_factory=apply.Installed)
    rsyslog: bool = True  # also rsyslog's host rules
    standby: bool = False  # of a Kea pair: this machine is the standby


@dataclass(frozen=True)
class Changed:
    """What `enroll` or `retire` did: the hosts, the daemons told, the TFTP files, the power."""

    inventory: Path
    hosts: tuple[NewHost, ...]
    applied: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()
    power: tuple[str, ...] = ()  # one line per host: power-cycled, or to be rebooted

    def as_json(self) -> dict[str, Any]:
        return {"inventory": str(self.inventory), "hosts": [h.as_json() for h in self.hosts],
                "applied": list(self.applied), "configs": list(self.configs),
                "power": list(self.power)}


def _steps(inventory: Inventory, options: ApplyOptions) -> list[tuple[str, Callable[[], None]]]:
    files = server_files(inventory, [options.dhcp])
    installed = options.installed
    steps: list[tuple[str, Callable[[], None]]] = []
    if options.dhcp is Dhcp.KEA:
        name = kea.CONF if kea.CONF in files else kea.HA_CONFS[1 if options.standby else 0]
        steps.append(("kea", lambda: apply.apply_kea(files[name], installed)))
    elif options.dhcp is Dhcp.DNSMASQ:
        steps.append(("dnsmasq", lambda: apply.apply_dnsmasq(files, installed)))
    else:
        steps.append(("dhcpd", lambda: apply.apply_dhcpd(files["dhcpd.conf"], installed)))
    if options.rsyslog:
        text = files["rsyslog-tcbuild.conf"]
        steps.append(("rsyslog", lambda: apply.apply_rsyslog(text, installed)))
    return steps


def apply_configs(old: Inventory, new: Inventory, options: ApplyOptions) -> tuple[str, ...]:
    """Put `new`'s configs live, daemon by daemon; if one fails, those before it get `old`'s
    back. The daemons told."""
    done: list[str] = []
    undo = dict(_steps(old, options))
    for name, step in _steps(new, options):
        try:
            step()
        except TcbuildError:
            for earlier in reversed(done):
                with contextlib.suppress(TcbuildError):  # the error below is the one to report
                    undo[earlier]()
            raise
        done.append(name)
    return tuple(done)


def _host_configs(inventory: Inventory, hosts: Sequence[NewHost], tftp: Sequence[Path]
                  ) -> list[str]:
    configs = []
    for host in hosts:
        group = inventory.groups.get(host.group) if host.group else None
        if group is None or group.recipe is not None or not group.append:
            continue  # `default` boots it, or its group's recipe publishes its config
        for root in tftp:
            configs.append(f"{root}/{write_host_config(root, host.mac, group.append)}")
    return configs


def _power(inventory: Inventory, hosts: Sequence[NewHost]) -> list[str]:
    lines = []
    known = {h.name: h for h in inventory.hosts}
    for host in hosts:
        if known[host.name].power is None:
            lines.append(f"{host.name}: no BMC or power_command; reboot it to boot as "
                         f"{host.name}")
            continue
        result = power(inventory, [host.name], "cycle")[0]
        lines.append(result.line() if result.ok else
                     f"{result.line()}; reboot it by hand to boot as {host.name}")
    return lines


@boundary
def enroll_many(path: Path, requests: Sequence[Request], *, tftp: Sequence[Path] = (),
                apply_options: ApplyOptions | None = None, power_cycle: bool = True
                ) -> Changed:
    """Add a host for each request in one inventory write; see the module's docstring."""
    path = Path(path)
    old = load_inventory(path)
    text = path.read_text(encoding="utf-8")  # read (and so valid) just now
    try:
        hosts = plan_hosts(old, requests)
    except InputError as e:
        raise InputError(f"{path}: {e}") from e
    with staged(path, with_hosts(path, text, hosts)) as new:
        applied = apply_configs(old, new, apply_options) if apply_options else ()
    configs = _host_configs(new, hosts, tftp)
    lines = _power(new, hosts) if tftp and power_cycle else []
    return Changed(path, tuple(hosts), applied, tuple(configs), tuple(lines))


@boundary
def enroll(path: Path, mac: str, *, name: str | None = None, ip: str | None = None,
           second_ip: str | None = None, group: str | None = None,
           extra: Mapping[str, str] | None = None, tftp: Sequence[Path] = (),
           apply_options: ApplyOptions | None = None, power_cycle: bool = True) -> Changed:
    """Add the machine with `mac` to the inventory (name and addresses allocated unless given),
    put the boot server's configs live (`apply_options`), write its per-MAC config into each
    of `tftp` and power-cycle it."""
    request = Request(mac, name, ip, second_ip, group, dict(extra or {}))
    return enroll_many(path, [request], tftp=tftp, apply_options=apply_options,
                       power_cycle=power_cycle)


@boundary
def enroll_new(path: Path, *, logs: Path | None = None, leases: Iterable[Path] | None = None,
               group: str | None = None, tftp: Sequence[Path] = (),
               apply_options: ApplyOptions | None = None, power_cycle: bool = True) -> Changed:
    """Enroll every machine `tcbuild fleet` lists as new (`fleet.discover.discovered`: its
    report borne out by a lease; `logs` and `leases` as there), each with `group`, in one
    inventory write. None new: nothing written, no host in the result."""
    path = Path(path)
    found = discovered(path, logs, leases)
    if not found:
        return Changed(path, ())
    return enroll_many(path, [Request(m.mac, group=group) for m in found], tftp=tftp,
                       apply_options=apply_options, power_cycle=power_cycle)


@boundary
def retire(path: Path, name: str, *, tftp: Sequence[Path] = (),
           apply_options: ApplyOptions | None = None) -> Changed:
    """Remove host `name`: its inventory table, its lines in the live configs, its per-MAC
    configs. Its log files stay."""
    path = Path(path)
    old = load_inventory(path)
    host = find_host(old, name)
    text = path.read_text(encoding="utf-8")  # read (and so valid) just now
    with staged(path, without_host(path, text, host.name)) as new:
        applied = apply_configs(old, new, apply_options) if apply_options else ()
    removed = [f"{root}/{gone}" for root in tftp for gone in remove_host_config(root, host.mac)]
    gone = NewHost(host.name, host.mac, host.ip, host.second_ip, host.group, {})
    return Changed(path, (gone,), applied, tuple(removed))
