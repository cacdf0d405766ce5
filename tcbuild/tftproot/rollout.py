"""A rollout's durable state in the TFTP root: `tcbuild/rollout.json`.

One file says which release is rolling out, to which hosts in which waves, what each host ran
before (its per-MAC config's text, or none) and where each host stands. It is written with the
one durable write (`atomic.write_bytes`) before every step it records, so a rollout killed at
any moment is continued (`--resume`) or undone (`--abort`) from it. While it names an
unfinished rollout, `publish`, `rollback` and another `rollout` refuse to start.

    {"release": "...", "build_id": "...", "phase": "running", "wave": 0,
     "waves": [["server1"], ["server2", "server3"]], "owns_default": true,
     "configs": {"default": "<new text>", "01-..": "<new text>"},
     "default_before": "<text of default before>",
     "hosts": {"server1": {"config": "01-..", "before": null, "old_release": "...",
                          "state": "pending", "cycled": null, "note": ""}},
     "recipe": "...", "inventory": "...", "logs": "...", "options": {...}}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..atomic import write_bytes
from ..errors import StateError, TcbuildError, boundary
from ..formats.statefile import Fields, dumps

ROLLOUT = "tcbuild/rollout.json"


class HostState(StrEnum):
    PENDING = "pending"
    DRAINING = "draining"
    REBOOTING = "rebooting"
    BOOTED = "booted"
    HEALTHY = "healthy"
    FAILED = "failed"
    REVERTING = "reverting"
    REVERTED = "reverted"


class Phase(StrEnum):
    RUNNING = "running"  # waves under way
    REVERTING = "reverting"  # a wave failed (or --abort): hosts going back
    DONE = "done"  # every wave healthy, default switched
    FAILED = "failed"  # reverted after a failed wave
    ABORTED = "aborted"  # reverted by --abort

    @property
    def finished(self) -> bool:
        return self in (Phase.DONE, Phase.FAILED, Phase.ABORTED)


@dataclass(frozen=True)
class HostRecord:
    config: str  # its per-MAC config's name (01-<mac>)
    before: str | None  # that config's text before the rollout (None: there was none)
    old_release: str | None  # the release it booted before
    state: HostState = HostState.PENDING
    cycled: float | None = None  # when it was power-cycled (for the current step)
    note: str = ""  # what was seen, for a failed host

    def as_json(self) -> dict[str, Any]:
        return {"config": self.config, "before": self.before, "old_release": self.old_release,
                "state": str(self.state), "cycled": self.cycled, "note": self.note}


@dataclass(frozen=True)
class Rollout:
    release: str
    build_id: str
    waves: tuple[tuple[str, ...], ...]
    hosts: dict[str, HostRecord]
    configs: dict[str, str]  # config name -> the text that boots the new release
    default_before: str | None
    owns_default: bool
    recipe: str
    inventory: str
    logs: str
    options: dict[str, Any] = field(default_factory=dict)
    phase: Phase = Phase.RUNNING
    wave: int = 0  # the wave under way (len(waves) once every wave is healthy)
    failure: tuple[str, ...] = ()  # one line per failed host

    def host(self, name: str, **changes: Any) -> Rollout:
        """The rollout with host `name`'s record changed."""
        return replace(self, hosts={**self.hosts, name: replace(self.hosts[name], **changes)})

    def wave_of(self, name: str) -> int:
        return next(i for i, wave in enumerate(self.waves) if name in wave)

    def as_json(self) -> dict[str, Any]:
        return {
            "release": self.release, "build_id": self.build_id, "phase": str(self.phase),
            "wave": self.wave, "waves": [list(w) for w in self.waves],
            "hosts": {n: h.as_json() for n, h in self.hosts.items()}, "configs": self.configs,
            "default_before": self.default_before, "owns_default": self.owns_default,
            "recipe": self.recipe, "inventory": self.inventory, "logs": self.logs,
            "options": self.options, "failure": list(self.failure),
        }

    def text(self) -> bytes:
        return dumps(self.as_json())

    @classmethod
    def parse(cls, f: Fields) -> Rollout:
        phase = _choice(f, "phase", Phase)
        waves = []
        for i, wave in enumerate(f.array("waves")):
            if not isinstance(wave, list) or not all(isinstance(n, str) for n in wave):
                f.fail("waves", f"wave {i} is not a list of host names")
            waves.append(tuple(str(n) for n in wave))
        hosts = {}
        for name, h in f.table("hosts").items():
            hosts[name] = HostRecord(h.string("config"), _optional_text(h, "before"),
                                     _optional_text(h, "old_release"),
                                     _choice(h, "state", HostState), _optional_time(h),
                                     h.string("note", ""))
        for wave in waves:
            for name in wave:
                if name not in hosts:
                    f.fail("waves", f"{name!r} is not under hosts")
        options = f.raw("options") if f.has("options") else {}
        if not isinstance(options, dict):
            f.fail("options", "not an object")
        failure = f.array("failure") if f.has("failure") else []
        return cls(f.string("release"), f.string("build_id"), tuple(waves), hosts,
                   f.strings("configs"), _optional_text(f, "default_before"),
                   f.flag("owns_default"), f.string("recipe"), f.string("inventory"),
                   f.string("logs"), options, phase, f.number("wave"),
                   tuple(str(line) for line in failure))


def _choice(f: Fields, key: str, kind: type[HostState] | type[Phase]) -> Any:
    value = f.string(key)
    try:
        return kind(value)
    except ValueError:
        f.fail(key, f"{value!r} is not one of {', '.join(str(k) for k in kind)}")


def _optional_text(f: Fields, key: str) -> str | None:
    return None if f.raw(key) is None else f.string(key)


def _optional_time(f: Fields) -> float | None:
    value = f.raw("cycled")
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        f.fail("cycled", "not a time (seconds) or null")
    return float(value)


@boundary
def read(tftp: Path) -> Rollout | None:
    """The rollout recorded in the tree (None: none ever); a damaged file is one line."""
    try:
        f = Fields.read(tftp / ROLLOUT)
    except FileNotFoundError:
        return None
    return Rollout.parse(f)


def write(tftp: Path, rollout: Rollout) -> None:
    """Record the rollout durably (owned like the tree)."""
    owner = tftp.stat()
    write_bytes(tftp / ROLLOUT, rollout.text(), owner=owner if os.geteuid() == 0 else None)


@boundary
def refuse_unfinished(roots: list[Path], what: str) -> None:
    """Exit 1 at once when a root records an unfinished rollout (a damaged record refuses too)."""
    for root in roots:
        try:
            found = read(root)
        except StateError as e:
            raise TcbuildError(f"{what}: {e}") from None
        if found is not None and not found.phase.finished:
            raise TcbuildError(
                f"{root / ROLLOUT}: rollout of release {found.release} is {found.phase} "
                f"(wave {found.wave + 1} of {len(found.waves)}); {what} refused: finish it with "
                f"`tcbuild rollout --resume` or undo it with `tcbuild rollout --abort`")
