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

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.inventoryfile import load_inventory
from ..errors import boundary
from ..tftproot import rollout as record
from ..tftproot.rollout import Rollout
from ..tftproot.state import Release, served
from .discover import NewMachine, discovered
from .rollout import fleet_lines, fleet_view
from .view import NodeStatus, render, survey


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
