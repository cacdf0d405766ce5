"""Power control of the inventory's hosts: through each one's BMC (IPMI over LAN, with Debian's
`ipmitool`) or the site's own `power_command`, several hosts at once.

    results = power(load_inventory("cluster.toml"), ["server1", "server2"], Action.CYCLE)
    failed = [r for r in results if not r.ok]  # each names its host and BMC: r.line()

Bad input (an unknown host, one without a BMC, a password file others may read, a command that
is not installed) is refused before any host is touched; a host that does not answer is a
result with `ok=False`, the others are still done.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..config.bmc import PowerAccess
from ..config.inventory import Host, Inventory
from ..errors import InputError, RecipeError

IPMITOOL = "ipmitool"
TIMEOUT = 30.0  # seconds for one host's command, whatever it does
IPMI_TIMEOUT = 2  # ipmitool -N: seconds to wait for each answer of the BMC
IPMI_RETRIES = 1  # ipmitool -R: tries after the first
JOBS = 16  # hosts at once


class Action(StrEnum):
    STATUS = "status"
    ON = "on"
    OFF = "off"
    CYCLE = "cycle"


@dataclass(frozen=True)
class PowerResult:
    """What one host's BMC (or power_command) said. `state` is "on" or "off" for `status`
    (None otherwise, or on failure); `error` is one line when `ok` is False."""

    host: str
    bmc: str  # its URL ("ipmi://10.1.2.5"), or "power_command" (via the URL if it has a BMC)
    action: Action
    ok: bool
    state: str | None
    error: str | None
    seconds: float

    def line(self) -> str:
        """One line: `server1  on` / `server1  cycle: done` / `server1 (ipmi://...): error`."""
        if not self.ok:
            return f"{self.host} ({self.bmc}): {self.error}"
        done = self.state if self.action is Action.STATUS else f"{self.action}: done"
        return f"{self.host}  {done}"

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "bmc": self.bmc, "action": self.action.value, "ok": self.ok,
                "state": self.state, "error": self.error, "seconds": round(self.seconds, 2)}


def power(inventory: Inventory, host_names: Sequence[str], action: Action | str,
          timeout: float = TIMEOUT, jobs: int = JOBS) -> list[PowerResult]:
    """Do `action` to each named host (in the order given, each once), `jobs` at a time.

    `InputError` (nothing done) for bad input; a host that fails is a result with ok=False.
    """
    action = _action(action)
    hosts = targets(inventory, host_names)
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(hosts)))) as pool:
        return list(pool.map(lambda host: _one(inventory, host, action, timeout), hosts))


def targets(inventory: Inventory, host_names: Sequence[str]) -> list[Host]:
    """The named hosts, each checked for a way to its power; InputError lists what is wrong."""
    by_name = {host.name.lower(): host for host in inventory.hosts}
    unknown = [name for name in host_names if name.lower() not in by_name]
    if unknown:
        raise InputError(f"{inventory.path}: no host {', '.join(map(repr, unknown))} (hosts: "
                         f"{', '.join(h.name for h in inventory.hosts) or 'none'})")
    hosts = list({name.lower(): by_name[name.lower()] for name in host_names}.values())
    if not hosts:
        raise InputError("no host named")
    problems = [problem for host in hosts if (problem := _access_problem(inventory, host))]
    if problems:
        raise RecipeError(problems)
    return hosts


def _action(action: Action | str) -> Action:
    try:
        return Action(action)
    except ValueError:
        raise InputError(f"{action!r} is not a power action (status, on, off, cycle)") from None


def _access_problem(inventory: Inventory, host: Host) -> str | None:
    """Why this host's power cannot be reached from here, as bad input; None if it can."""
    access = host.power
    if access is None:
        return (f"{inventory.path}: {host.name} has no bmc and no power_command (add "
                "bmc = \"ipmi://ADDRESS\", or a power_command to the host or [cluster])")
    if access.command is not None:
        program = shlex.split(access.command)[0]
        path = inventory.path.parent / program  # runs there: a relative path is from there
        if not (shutil.which(program) if "/" not in program
                else path.is_file() and os.access(path, os.X_OK)):
            return (f"{inventory.path}: {access.keys['power_command']}: {program!r} is not a "
                    "program here (not on PATH, or not an executable file)")
        return None
    assert access.password_file is not None
    problem = _password_file_problem(access.password_file, access.keys["bmc_password_file"],
                                     inventory.path)
    if problem is None and shutil.which(IPMITOOL) is None:
        return f"{host.name}: ipmitool is not installed (apt-get install ipmitool)"
    return problem


def _password_file_problem(path: Path, key: str, inventory: Path) -> str | None:
    """Like ssh with a key: the file must be there and not readable by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"{path}: cannot read the BMC password file ({e.strerror}; {inventory}: {key})"
    if not stat.S_ISREG(mode):
        return f"{path}: the BMC password file is not a file ({inventory}: {key})"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"{path}: the BMC password file may be read by others (mode "
                f"{stat.S_IMODE(mode):04o}); chmod 600 it ({inventory}: {key})")
    return None


def _one(inventory: Inventory, host: Host, action: Action, timeout: float) -> PowerResult:
    access = host.power
    assert access is not None
    start = time.monotonic()
    if access.command is not None:
        fields = {"action": action.value, "name": host.name, "mac": host.mac, "ip": str(host.ip),
                  "bmc": access.bmc.address if access.bmc else ""}
        argv, cwd = access.argv(fields), inventory.path.parent
    else:
        argv, cwd = ipmitool_argv(access, action), None
    state, error = _run(argv, cwd, action, timeout, access)
    return PowerResult(host.name, access.via, action, error is None, state, error,
                       time.monotonic() - start)


def ipmitool_argv(access: PowerAccess, action: Action) -> list[str]:
    """`ipmitool -I lanplus ... chassis power ACTION`: RMCP+ with cipher suite 3 (what
    ipmitool 1.8.19 asks for quietly), the password read from its file (never on the command
    line, where `ps` shows it); `-v` says why a session failed."""
    assert access.bmc is not None and access.user is not None
    return [IPMITOOL, "-v", "-I", "lanplus", "-C", "3", "-N", str(IPMI_TIMEOUT),
            "-R", str(IPMI_RETRIES), "-H", access.bmc.host, "-p", str(access.bmc.port),
            "-U", access.user, "-f", str(access.password_file), "chassis", "power",
            action.value]


def _run(argv: list[str], cwd: Path | None, action: Action, timeout: float,
         access: PowerAccess) -> tuple[str | None, str | None]:
    """(state, error) of one command."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout:g} s"
    except OSError as e:
        return None, f"cannot run {argv[0]}: {e.strerror or e}"
    if done.returncode != 0:
        if access.command is not None:
            said = _last_line(done.stderr) or _last_line(done.stdout) or "(nothing on stderr)"
            return None, f"power_command exited with {done.returncode}: {said}"
        return None, _ipmi_error(done.stderr)
    if action is not Action.STATUS:
        return None, None
    words = done.stdout.split()
    if access.command is None:  # "Chassis Power is on"
        state = words[-1].lower() if done.stdout.startswith("Chassis Power is") else ""
    else:
        state = words[0].lower() if words else ""
    if state not in ("on", "off"):
        return None, f"status said {_last_line(done.stdout) or 'nothing'!r}, not on or off"
    return state, None


IPMI_ERRORS = (  # what ipmitool -v says -> what it means
    ("RAKP 2 HMAC is invalid", "the BMC refused the password"),
    ("unauthorized name", "the BMC refused the user name"),
    ("Get Auth Capabilities error", "the BMC did not answer"),
    ("Error issuing Get Channel Authentication", "the BMC did not answer"),
)


def _ipmi_error(stderr: str) -> str:
    """One line from ipmitool's stderr: what went wrong, then its last line."""
    said = _last_line(stderr) or "(nothing on stderr)"
    meaning = next((text for seen, text in IPMI_ERRORS if seen in stderr), None)
    return f"{meaning} (ipmitool: {said})" if meaning else f"ipmitool: {said}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
