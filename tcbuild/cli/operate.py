"""The operator's commands on a running pool: `fleet` (what each node booted, the machines
waiting to be enrolled, the releases and the rollout), `power`, `enroll` and `retire`.

Like every command (`commands`), each parses, calls one library function and prints; each
imports what it uses when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..stages.enroll import ApplyOptions, Changed

ONE_MACHINE = ("mac", "name", "ip", "second_ip", "bmc", "bmc_user", "bmc_password_file")
"""enroll's arguments that describe one machine: not with --all-new."""


def fleet(args: argparse.Namespace) -> int:
    from ..stages.remote import fleet_report

    if args.serve is not None:
        return _serve(args)
    found = fleet_report(args.inventory, args.logs, args.tftp, args.leases)
    if args.json:
        print(json.dumps(found.as_json(), indent=1))
    else:
        for line in found.lines():
            print(line)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..fleet import web
    from ..fleet.follow import Follower
    from ..stages.remote import local_only

    if args.json:
        raise InputError("--serve and --json: the server has /api/fleet for the JSON")
    host, port = web.address(args.serve)
    tftp = local_only([args.tftp], "fleet --serve")[0] if args.tftp is not None else None
    follower = Follower(args.inventory, args.logs, tftp, args.leases)

    def started(url: str) -> None:
        print(url, flush=True)
        print(f"serving the fleet at {url} (/, /api/fleet, /metrics) until SIGINT or SIGTERM",
              file=sys.stderr, flush=True)

    web.serve(follower, host, port, started)
    return 0


def power(args: argparse.Namespace) -> int:
    from ..config.inventoryfile import load_inventory
    from ..fleet.power import power

    results = power(load_inventory(args.inventory), args.hosts, args.action)
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=1))
    else:
        for result in results:
            print(result.line(), file=sys.stdout if result.ok else sys.stderr)
    return 0 if all(r.ok for r in results) else 1


def _apply_options(args: argparse.Namespace) -> ApplyOptions | None:
    import shlex

    from ..bootserver.apply import Installed
    from ..bootserver.files import Dhcp
    from ..stages.enroll import ApplyOptions

    if args.apply is None:
        return None
    given = {key: getattr(args, key) for key in (
        "kea_conf", "kea_socket", "kea_leases", "dnsmasq_hosts", "dnsmasq_opts", "dnsmasq_pid",
        "dhcpd_conf", "rsyslog_conf") if getattr(args, key) is not None}
    for key in ("dhcpd_restart", "rsyslog_restart"):
        command = getattr(args, key)
        if command is not None:
            try:
                given[key] = tuple(shlex.split(command))
            except ValueError as e:
                raise InputError(f"--{key.replace('_', '-')}: {e}") from e
            if not given[key]:
                raise InputError(f"--{key.replace('_', '-')}: empty command")
    return ApplyOptions(Dhcp(args.apply), Installed(**given), not args.no_rsyslog,
                        args.kea_standby)


def _changed(args: argparse.Namespace, changed: Changed, verb: str) -> int:
    if args.json:
        print(json.dumps(changed.as_json(), indent=1))
        return 0
    for host in changed.hosts:
        print(f"{changed.inventory}: {verb} {host.name} ({host.mac}, {host.ip}, "
              f"{host.second_ip})")
    for name in changed.applied:
        print(f"  {name}: new config live")
    for path in changed.configs:
        print(f"  {path}")
    for line in changed.power:
        print(f"  {line}")
    return 0


def enroll(args: argparse.Namespace) -> int:
    from ..stages.enroll import enroll, enroll_new

    if args.all_new:
        given = [key for key in ONE_MACHINE if getattr(args, key) is not None]
        if given:
            shown = "MAC" if given[0] == "mac" else f"--{given[0].replace('_', '-')}"
            raise InputError(f"enroll --all-new: {shown} is one machine's; give it to "
                             "`tcbuild enroll MAC` instead")
        changed = enroll_new(args.inventory, logs=args.logs, leases=args.leases,
                             group=args.group, tftp=args.tftp,
                             apply_options=_apply_options(args), power_cycle=not args.no_power)
        if not changed.hosts and not args.json:
            print(f"{changed.inventory}: no new machine to enroll")
        return _changed(args, changed, "enrolled")
    if args.mac is None:
        raise InputError("enroll: give the machine's MAC, or --all-new")
    for key in ("logs", "leases"):
        if getattr(args, key) is not None:
            raise InputError(f"enroll: --{key} goes with --all-new")
    extra = {key: value for key, value in (
        ("bmc", args.bmc), ("bmc_user", args.bmc_user),
        ("bmc_password_file", args.bmc_password_file)) if value is not None}
    changed = enroll(args.inventory, args.mac, name=args.name, ip=args.ip,
                     second_ip=args.second_ip, group=args.group, extra=extra, tftp=args.tftp,
                     apply_options=_apply_options(args), power_cycle=not args.no_power)
    return _changed(args, changed, "enrolled")


def retire(args: argparse.Namespace) -> int:
    from ..stages.enroll import retire

    changed = retire(args.inventory, args.name, tftp=args.tftp,
                     apply_options=_apply_options(args))
    return _changed(args, changed, "retired")
