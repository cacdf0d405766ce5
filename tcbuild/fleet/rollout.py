"""A rollout's planning, apart from doing it: the hosts a recipe boots, the waves they go in,
and what each host will go through (`--dry-run`); and the rollout as the fleet view shows it.

Waves (`--waves 1,25%,100%`) are cumulative: each names how many of the hosts have the new
release once it is done, a count or a percentage rounded up. Every wave takes at least one new
host; a wave that could not is left out, and the last wave always reaches every host.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..boot.pxelinux import mac_config_name
from ..config.inventory import Host, Inventory
from ..errors import InputError
from ..tftproot.rollout import Rollout

WAVE = re.compile(r"(?P<number>[0-9]{1,6})(?P<percent>%?)")
DEFAULT_WAVES = "1,25%,100%"


class Power(Protocol):
    """Power control of the hosts (their BMCs, or a site's `power_command`)."""

    def missing(self, hosts: Sequence[Host]) -> list[str]:
        """The names of the hosts it cannot power-cycle."""

    def cycle(self, host: Host) -> None:
        """Power-cycle the host; a failure is a TcbuildError naming it and its BMC."""


@dataclass(frozen=True)
class Step:
    """A cumulative wave size: `count` hosts, or `percent` of them."""

    count: int | None = None
    percent: int | None = None

    def of(self, total: int) -> int:
        if self.percent is not None:
            return math.ceil(total * self.percent / 100)
        return self.count or 0


def parse_waves(text: str) -> tuple[Step, ...]:
    """`1,25%,100%` -> its steps; a bad one is one line naming `--waves`."""
    steps = []
    for part in text.split(","):
        found = WAVE.fullmatch(part.strip())
        if found is None:
            raise InputError(f"--waves {text}: {part.strip()!r} is not a count or a percentage")
        number = int(found["number"])
        if number == 0 or (found["percent"] and number > 100):
            raise InputError(f"--waves {text}: {part.strip()!r} is out of range (1.. hosts, "
                             "or 1%..100%)")
        steps.append(Step(percent=number) if found["percent"] else Step(count=number))
    return tuple(steps)


def wave_sizes(steps: Sequence[Step], total: int) -> list[int]:
    """The cumulative size of each wave for `total` hosts: rounded up, at least one new host a
    wave (a step that cannot add one is left out), the last reaching every host."""
    sizes: list[int] = []
    for step in steps:
        size = min(total, max(step.of(total), (sizes[-1] if sizes else 0) + 1))
        if size > (sizes[-1] if sizes else 0):
            sizes.append(size)
    if total and (not sizes or sizes[-1] < total):
        sizes.append(total)
    return sizes


def hosts_of(recipe: Path, inventory: Inventory) -> list[Host]:
    """The hosts that boot this recipe: for the default recipe, those without a group of their
    own recipe; for a group's recipe, that group's hosts."""
    mine = recipe.resolve()
    group_recipes = {g.recipe.resolve() for g in inventory.groups.values() if g.recipe}
    chosen = []
    for host in inventory.hosts:
        group = inventory.groups.get(host.group) if host.group else None
        theirs = group.recipe.resolve() if group is not None and group.recipe else None
        if theirs == mine or (theirs is None and mine not in group_recipes):
            chosen.append(host)
    return chosen


def plan_waves(hosts: Sequence[Host], waves: str = DEFAULT_WAVES,
               canary: str | None = None) -> list[list[Host]]:
    """The hosts of each wave, in the inventory's order; `canary` first."""
    ordered = list(hosts)
    if canary is not None:
        first = [h for h in ordered if h.name == canary]
        if not first:
            raise InputError(f"--canary {canary}: not one of the hosts this recipe boots "
                             f"({', '.join(h.name for h in hosts) or 'none'})")
        ordered = first + [h for h in ordered if h.name != canary]
    sizes = wave_sizes(parse_waves(waves), len(ordered))
    return [ordered[start:end] for start, end in zip([0, *sizes], sizes, strict=False)]


def describe(waves: Sequence[Sequence[Host]], release: str, named: dict[str, str | None],
             drain: bool, manual: bool, owns_default: bool) -> list[str]:
    """The `--dry-run` lines: each wave and what each of its hosts goes through."""
    lines = [f"rollout of release {release}: {len(waves)} wave(s), "
             f"{sum(len(w) for w in waves)} host(s)"]
    reboot = "asked to be rebooted by hand" if manual else "power-cycled"
    for i, wave in enumerate(waves, 1):
        lines.append(f"wave {i}: {', '.join(h.name for h in wave)}")
        for host in wave:
            steps = [f"pxelinux.cfg/{mac_config_name(host.mac)} and its iPXE twin -> {release} "
                     f"(now {named.get(host.name) or 'no release'})"]
            if drain:
                steps.append("drained")
            steps += [reboot, "waited for until healthy on the new build"]
            lines.append(f"  {host.name}: {'; '.join(steps)}")
    if owns_default:
        lines.append(f"then pxelinux.cfg/default -> {release}; per-MAC configs equal to it "
                     "dropped")
    return lines


def fleet_view(rollout: Rollout) -> dict[str, Any]:
    """The rollout as `fleet --json` shows it."""
    return {"release": rollout.release, "phase": str(rollout.phase),
            "wave": min(rollout.wave + 1, len(rollout.waves)), "waves": len(rollout.waves),
            "hosts": {name: {"state": str(h.state), "wave": rollout.wave_of(name) + 1,
                             "note": h.note or None}
                      for name, h in rollout.hosts.items()}}


def fleet_lines(rollout: Rollout) -> list[str]:
    """The rollout as `fleet` shows it, below the nodes."""
    view = fleet_view(rollout)
    lines = [f"rollout of release {rollout.release}: {view['phase']}, wave {view['wave']} of "
             f"{view['waves']}"]
    width = max((len(name) for name in rollout.hosts), default=0)
    for name, host in view["hosts"].items():
        note = f"  ({host['note']})" if host["note"] else ""
        lines.append(f"  {name:<{width}}  wave {host['wave']}  {host['state']}{note}")
    return lines
