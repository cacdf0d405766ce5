"""`tcbuild fleet` as one object: the inventory's hosts (`view`), the machines waiting to be
enrolled (`discover`), the TFTP root's releases and the rollout it records (`rollout`).

`report(...)` reads them; `FleetReport.as_json()` is what `fleet --json` prints, one object:

    {"hosts":    [host, ...],      each as `NodeStatus.as_json()`, in the inventory's order,
                                   with "rollout": {"release", "phase", "state", "wave",
                                   "note"} when the tree records a rollout that has the host
     "new":      [machine, ...],   each as `NewMachine.as_json()` ("state": "new")
     "releases": [release, ...],   oldest first, each {"id", "recipe", "time", "size",
                                   "configs"} (the configs that boot it); [] without a tree
     "rollout":  {...} | null}     the rollout as `rollout.fleet_view` shows it, if any

and `FleetReport.lines()` what `fleet` prints: a row per host, one per new machine, then the
rollout. Before, `--json` printed a bare array of the hosts and new machines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..boot.pxelinux import CONFIG_DIR, parse
from ..config.inventory import Host, Inventory
from ..config.inventoryfile import load_inventory
from ..errors import InputError, boundary
from ..tftproot import rollout as record
from ..tftproot.releases import release_of, releases
from ..tftproot.rollout import Rollout
from ..tftproot.state import Release, served
from .discover import NewMachine, discovered
from .logtail import log_index, read_node
from .rollout import fleet_lines, fleet_view
from .view import RELEASE_BUILD, Named, NodeStatus, config_names, judge, render

log = logging.getLogger("tcbuild")


@dataclass(frozen=True)
class FleetReport:
    """What `tcbuild fleet` shows; see the module's docstring for its JSON."""

    hosts: tuple[NodeStatus, ...]
    new: tuple[NewMachine, ...]
    releases: tuple[tuple[Release, tuple[str, ...]], ...]  # each with the configs booting it
    rollout: Rollout | None

    def as_json(self) -> dict[str, Any]:
        shown = fleet_view(self.rollout) if self.rollout else None
        states = shown["hosts"] if shown else {}
        return {
            "hosts": [{**n.as_json(), **({"rollout": {
                "release": shown["release"], "phase": shown["phase"], **states[n.name]}}
                if shown and n.name in states else {})} for n in self.hosts],
            "new": [m.as_json() for m in self.new],
            "releases": [release.as_json(list(configs)) for release, configs in self.releases],
            "rollout": shown}

    def lines(self) -> list[str]:
        return [*render(self.hosts), *(m.row() for m in self.new),
                *(fleet_lines(self.rollout) if self.rollout else [])]


@boundary
def report(inventory: Path, logs: Path | None = None, tftp: Path | None = None,
           leases: Iterable[Path] | None = None) -> FleetReport:
    """The fleet from the log directory (default: the inventory's), the lease files (default:
    Debian's) and, with `tftp`, the tree: what each host booted and should boot, its releases
    and its rollout."""
    read = load_inventory(inventory)  # once, for the hosts and the new machines alike
    hosts = survey(read, logs, tftp)
    new = discovered(read, logs, leases)
    found = served(tftp) if tftp is not None else []
    rolling = record.read(tftp) if tftp is not None else None
    return FleetReport(tuple(hosts), tuple(new),
                       tuple((release, tuple(configs)) for release, configs in found), rolling)


def pxe_release(tftp: Path, host: Host, builds: Mapping[str, str],
                present: set[str] | None = None, known: dict[str, Named] | None = None
                ) -> Named | None:
    """The config pxelinux would load for `host` and the release its default label boots.

    `builds`: release id -> short build id, for the releases in the tree. For many hosts:
    `present`, the names in pxelinux.cfg (listed once), and `known`, configs already read.
    """
    for name in config_names(host):
        if present is not None and name not in present:
            continue
        if known is not None and name in known:
            return known[name]
        path = tftp / CONFIG_DIR / name
        if not path.is_file():
            continue
        named = _named(path, f"{CONFIG_DIR}/{name}", builds)
        if known is not None:
            known[name] = named
        return named
    return None


def named_configs(tftp: Path, hosts: Iterable[Host], builds: Mapping[str, str]
                  ) -> dict[str, Named | None]:
    """`pxe_release` of many hosts: pxelinux.cfg listed once, each config read once."""
    present, known = _listed(tftp / CONFIG_DIR), dict[str, Named]()
    return {host.name: pxe_release(tftp, host, builds, present, known) for host in hosts}


def _named(path: Path, where: str, builds: Mapping[str, str]) -> Named:
    try:
        config = parse(path.read_text(errors="replace"), str(path))
        release = release_of(config.label(config.default).kernel)
    except (OSError, InputError) as e:
        log.warning("%s", e)
        return Named(where, None, None)
    if release is None:
        return Named(where, None, None)
    found = RELEASE_BUILD.search(release)
    return Named(where, release, builds.get(release) or (found[1] if found else None))


@boundary
def survey(inventory: Path | Inventory, logs: Path | None = None, tftp: Path | None = None
           ) -> list[NodeStatus]:
    """Every inventory host's status, from the log directory (default: the inventory's);
    `inventory`: its file, or one already read."""
    inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
    logs = logs if logs is not None else Path(inv.cluster.log_dir)
    if not logs.is_dir():
        raise InputError(f"{logs}: no such log directory")
    if tftp is not None and not tftp.is_dir():
        raise InputError(f"{tftp}: the TFTP root does not exist")
    builds = {r.id: r.build_id[:12]
              for r in (releases(tftp) if tftp is not None else [])}
    index = log_index(logs)
    named = named_configs(tftp, inv.hosts, builds) if tftp is not None else {}
    return [judge(host, read_node(logs, host, index), named.get(host.name), tftp is not None)
            for host in inv.hosts]


def _listed(directory: Path) -> set[str]:
    try:
        return {p.name for p in directory.iterdir()}
    except OSError:
        return set()
