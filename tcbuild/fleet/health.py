"""Is a power-cycled host back, on the build it should boot, and healthy? Judged from the log
host's files only, read through the fleet view (`logtail.node_lines`): a line counts only from the
host's own file and address, with the time the log host received it.

After the host was power-cycled (at `since`, on this machine's clock, which the log host's must
follow), it must log a boot line (`bootlocal: game-server node, build X, ...`) naming the
expected build; then a line from the game server's tag (`[cluster] game_log_tag`) and no error
(the error file: the game server's errors and bootlocal's, which it sends under the game tag)
for `healthy_for` seconds. `judge` is pure; `look` reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..config.inventory import Host
from .logtail import node_lines
from .view import Boot, Line, boot_of


class Health(StrEnum):
    WAITING = "waiting"  # no boot line since the power-cycle yet
    BOOTED = "booted"  # booted the expected build, not healthy for long enough yet
    HEALTHY = "healthy"
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    health: Health
    boot: Boot | None  # the last boot since the power-cycle
    error: Line | None  # the last error since that boot
    note: str = ""  # for a failure: what was seen

    def seen(self) -> str:
        """What the log host saw: last boot, last error."""
        boot = (f"last boot {self.boot.time:%Y-%m-%dT%H:%M:%SZ} build {self.boot.build}"
                if self.boot else "no boot since the power-cycle")
        error = f"last error {self.error.text}" if self.error else "no error"
        return f"{boot}, {error}"


def same_build(said: str, build_id: str) -> bool:
    """Does the build a node named (its short id, or the whole) match `build_id` (the whole,
    or the short id a release's name ends in)?"""
    return min(len(said), len(build_id)) >= 6 and (build_id.startswith(said)
                                                   or said.startswith(build_id))


def judge(lines: Iterable[tuple[Line, bool]], since: float, build_id: str, game_tag: str,
          healthy_for: float, timeout: float, now: float, need_game: bool = True) -> Verdict:
    """The host's health from its lines: `since` the power-cycle, booted `build_id`, the game
    tag heard and no error for `healthy_for` s; failed once `timeout` s have passed without
    that, at once on an error or a boot of another build. `need_game=False`: booting the
    build is enough (a host going back to its old release)."""
    seen = [(line, errors) for line, errors in lines if line.time.timestamp() >= since]
    seen.sort(key=lambda pair: pair[0].time)
    boot: Boot | None = None
    error: Line | None = None
    game = False
    for line, errors in seen:
        found = boot_of(line)
        if found is not None and not errors:
            boot, error, game = found, None, False  # a new boot: what came before is past
        elif boot is not None and errors:
            error = line
        elif boot is not None and line.program == game_tag:
            game = True
    late = now - since > timeout
    if boot is None:
        if late:
            return Verdict(Health.FAILED, None, None, f"not back within {timeout:.0f} s")
        return Verdict(Health.WAITING, None, None)
    if not same_build(boot.build, build_id):
        return Verdict(Health.FAILED, boot, error,
                       f"booted build {boot.build}, not {build_id[:12]}")
    if error is not None:
        return Verdict(Health.FAILED, boot, error, "an error since its boot")
    if not need_game or (game and now - boot.time.timestamp() >= healthy_for):
        return Verdict(Health.HEALTHY, boot, None)
    if late:
        what = (f"not healthy for {healthy_for:.0f} s" if game
                else f"no line from the game server's tag {game_tag!r}")
        return Verdict(Health.FAILED, boot, None, f"{what} within {timeout:.0f} s")
    return Verdict(Health.BOOTED, boot, None)


def look(logs: Path, host: Host, since: float, build_id: str, game_tag: str, healthy_for: float,
         timeout: float, need_game: bool = True, now: float | None = None) -> Verdict:
    """`judge` of the host's lines in `logs` now."""
    return judge(node_lines(logs, host), since, build_id, game_tag, healthy_for, timeout,
                 time.time() if now is None else now, need_game)

