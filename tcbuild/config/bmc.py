"""How tcbuild reaches a node's power: its BMC (IPMI over LAN) or the site's own command.

The inventory's reader calls `read_power` for each host; what it returns rides on the `Host`.
Nothing here touches the network or the password file: `fleet.power` does, when asked to.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

IPMI_PORT = 623
USER_MAX = 16  # IPMI v2 user names are at most 16 bytes
PLACEHOLDERS = ("action", "name", "mac", "ip", "bmc")
BMC_KEYS = {"bmc", "bmc_user", "bmc_password_file", "power_command"}
"""Keys a [[host]] may have for power control; [cluster] may have all but `bmc` (defaults)."""
CLUSTER_BMC_KEYS = BMC_KEYS - {"bmc"}
BMC_URL = re.compile(r"^ipmi://(?P<host>[A-Za-z0-9.-]+)(:(?P<port>[0-9]{1,5}))?$")
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)

Problem = Callable[[str, str], None]
"""(key path, message): how the inventory's reader collects a problem."""


@dataclass(frozen=True)
class Bmc:
    """A BMC's LAN address: `ipmi://host[:port]`."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """`host`, or `host:port` when the port is not IPMI's."""
        return self.host if self.port == IPMI_PORT else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"ipmi://{self.address}"


@dataclass(frozen=True)
class PowerAccess:
    """One host's way to its power: `command` (the site's template) if set, else `bmc` with
    `user` and `password_file`. `keys` names where each setting came from, for messages."""

    bmc: Bmc | None
    user: str | None
    password_file: Path | None
    command: str | None
    keys: Mapping[str, str]  # setting -> key path, e.g. "bmc_password_file" -> "cluster.bmc_..."

    @property
    def via(self) -> str:
        """What a message names: the BMC's URL, or `power_command`."""
        if self.command is not None:
            return f"power_command via {self.bmc.url}" if self.bmc else "power_command"
        return self.bmc.url if self.bmc else "no BMC"

    def argv(self, fields: Mapping[str, str]) -> list[str]:
        """The power command's words, each with its placeholders filled (never a shell)."""
        assert self.command is not None
        return [word.format_map(fields) for word in shlex.split(self.command)]


def cluster_defaults(table: Mapping[str, Any], problem: Problem) -> dict[str, tuple[Any, str]]:
    """[cluster]'s defaults for power control: key -> (value, key path), each checked."""
    found = {}
    for key in sorted(CLUSTER_BMC_KEYS & set(table)):
        value = table[key]  # a bad one is None: reported here, once, not again for each host
        found[key] = (value if _checked(key, value, f"cluster.{key}", problem) else None,
                      f"cluster.{key}")
    return found


def read_power(item: Mapping[str, Any], where: str, defaults: Mapping[str, tuple[Any, str]],
               base: Path, problem: Problem) -> PowerAccess | None:
    """A [[host]]'s power settings (its own, else [cluster]'s), or None if it has none."""
    settings = dict(defaults)
    for key in BMC_KEYS & set(item):
        settings[key] = (item[key], f"{where}{key}")
    bmc = None
    if "bmc" in settings:
        bmc = _bmc(*settings["bmc"], problem)
        if bmc is None:
            return None
    bad = [key for key, (value, path) in settings.items() if key != "bmc" and (
        value is None or path.startswith(where) and not _checked(key, value, path, problem))]
    if bad:  # [cluster]'s were checked once, by cluster_defaults
        return None
    values: dict[str, str] = {key: value for key, (value, _) in settings.items() if key != "bmc"}
    command = values.get("power_command")
    if command is not None and bmc is None and "bmc" in _names(command):
        problem(settings["power_command"][1], f"uses {{bmc}}, but {where.rstrip('.')} has no "
                "bmc")
        return None
    if bmc is None and command is None:
        return None
    keys = {key: path for key, (_, path) in settings.items()}
    user, password = values.get("bmc_user"), values.get("bmc_password_file")
    if command is None:  # ipmitool: a user and a password file are needed
        for key, value in (("bmc_user", user), ("bmc_password_file", password)):
            if value is None:
                problem(f"{where}{key}", f"missing (the BMC {bmc.url if bmc else ''} needs it; "
                        "or set it once in [cluster], or give the host a power_command)")
                return None
    return PowerAccess(bmc, user, base / password if password else None, command, keys)


def _bmc(value: Any, key: str, problem: Problem) -> Bmc | None:
    match = BMC_URL.match(value) if isinstance(value, str) else None
    host = match["host"] if match else ""
    port = int(match["port"]) if match and match["port"] else IPMI_PORT
    if not match or not _host_ok(host):
        problem(key, f"{value!r} is not a BMC address like 'ipmi://10.1.2.5' or "
                "'ipmi://10.1.2.5:623' (IPMI over LAN)")
        return None
    if not 0 < port < 65536:
        problem(key, f"{port} is not a port number")
        return None
    return Bmc(host, port)


def _host_ok(text: str) -> bool:
    """An IPv4 address, or a DNS name (all digits and dots must be an address)."""
    if re.fullmatch(r"[0-9.]+", text):
        try:
            IPv4Address(text)
        except ValueError:
            return False
        return True
    return all(LABEL.match(part) for part in text.split("."))


def _checked(key: str, value: Any, path: str, problem: Problem) -> bool:
    """Whether a power setting (not `bmc`) is well-formed; if not, its problem is reported."""
    if not isinstance(value, str):
        problem(path, f"expected a string, got {type(value).__name__}")
        return False
    if key == "bmc_user" and not 0 < len(value.encode()) <= USER_MAX:
        problem(path, f"{value!r}: an IPMI user name has 1 to {USER_MAX} bytes")
        return False
    if key == "bmc_password_file" and not value:
        problem(path, "empty (the file holding the BMC's password)")
        return False
    if key == "power_command":
        message = _template_problem(value)
        if message:
            problem(path, message)
            return False
    return True


def _names(template: str) -> set[str]:
    """The placeholders a (well-formed) template uses."""
    return {name for word in shlex.split(template)
            for _, name, _, _ in string.Formatter().parse(word) if name is not None}


def _template_problem(template: str) -> str | None:
    """What is wrong with a power_command template, or None."""
    try:
        words = shlex.split(template)
    except ValueError as e:
        return f"{template!r} is not a command line ({e})"
    if not words:
        return "empty (a command like 'site-power {action} {name}')"
    for word in words:
        try:
            parsed = list(string.Formatter().parse(word))
        except ValueError as e:
            return f"{word!r}: {e} (write {{{{ and }}}} for a brace)"
        for _, name, spec, conversion in parsed:
            if name is not None and (name not in PLACEHOLDERS or spec or conversion):
                return (f"{{{name}{'!' + conversion if conversion else ''}"
                        f"{':' + spec if spec else ''}}} is not one of "
                        f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    return None
