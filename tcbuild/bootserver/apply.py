"""Regenerated boot-server configs put live, without dropping service; one function per daemon.

Kea is told through its control socket: `config-test` first (nothing is written if Kea
refuses), then the file is written and `config-set` loads it into the running server (same
process, leases kept). dnsmasq re-reads its `dhcp-hostsfile` and `dhcp-optsfile` on SIGHUP.
ISC dhcpd cannot reload: `dhcpd -t` checks the file, then it is restarted (its leases file keeps
the leases). rsyslog's rules: a restart (or the site's own command). A daemon that fails to
take its new config gets the previous files back, and is told again. The installed places are
Debian's defaults; each is an option (`Installed`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_bytes
from ..errors import TcbuildError
from . import dnsmasq, kea

SOCKET_TIMEOUT = 10.0  # seconds for one answer of Kea's control socket
COMMAND_TIMEOUT = 60.0  # seconds for a restart or a check


@dataclass(frozen=True)
class Installed:
    """Where the boot server's daemons read their configs, and how each is restarted."""

    kea_conf: Path = Path("/etc/kea/kea-dhcp4.conf")
    kea_socket: Path | None = None  # None: the generated config's `control-socket`
    kea_leases: Path | None = None  # None: the generated config's lease file
    dnsmasq_hosts: Path = Path(dnsmasq.HOSTS_FILE)
    dnsmasq_opts: Path = Path(dnsmasq.OPTS_FILE)
    dnsmasq_pid: Path = Path("/run/dnsmasq/dnsmasq.pid")
    dhcpd_conf: Path = Path("/etc/dhcp/dhcpd.conf")
    dhcpd_restart: tuple[str, ...] = ("systemctl", "restart", "isc-dhcp-server")
    rsyslog_conf: Path = Path("/etc/rsyslog.d/tcbuild.conf")
    rsyslog_restart: tuple[str, ...] = ("systemctl", "restart", "rsyslog")


class ApplyError(TcbuildError):
    """A daemon refused its new config, or could not be reached (the previous one is back)."""


def _swap(files: Mapping[Path, str | None]) -> dict[Path, str | None]:
    """Write each file (None: remove it); what each held before (None: absent)."""
    before: dict[Path, str | None] = {}
    for path, text in files.items():
        try:
            before[path] = path.read_text()
        except FileNotFoundError:
            before[path] = None
        if text is None:
            path.unlink(missing_ok=True)
        else:
            write_bytes(path, text.encode())
    return before


def _command(argv: Sequence[str | os.PathLike[str]], what: str) -> str | None:
    """Run a check or restart; None if it succeeded, else its last line of output."""
    try:
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{what}: {e}"
    if done.returncode == 0:
        return None
    lines = (done.stderr + done.stdout).strip().splitlines()
    return f"{what} exited {done.returncode}: {lines[-1] if lines else 'no output'}"


# -- Kea -------------------------------------------------------------------------------------

def kea_config(text: str, installed: Installed) -> dict[str, Any]:
    """A generated Kea config as data, with the installed socket and lease file if given."""
    config: dict[str, Any] = json.loads("\n".join(
        line for line in text.splitlines() if not line.startswith("//")))
    dhcp4 = config["Dhcp4"]
    if installed.kea_socket is not None:
        dhcp4["control-socket"]["socket-name"] = str(installed.kea_socket)
    if installed.kea_leases is not None:
        dhcp4["lease-database"]["name"] = str(installed.kea_leases)
    return config


def kea_command(path: Path, command: str, arguments: Any = None) -> dict[str, Any]:
    """One command through Kea's control socket; its answer (`result` 0 is success)."""
    request: dict[str, Any] = {"command": command}
    if arguments is not None:
        request["arguments"] = arguments
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(SOCKET_TIMEOUT)
            s.connect(str(path))
            s.sendall(json.dumps(request).encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
                try:
                    answer = json.loads(data)
                    break
                except ValueError:
                    continue
            else:
                raise ApplyError(f"Kea's control socket {path}: no whole answer to {command}")
    except OSError as e:
        raise ApplyError(f"Kea's control socket {path}: {e.strerror or e}") from e
    found: dict[str, Any] = answer[0] if isinstance(answer, list) else answer
    return found


def apply_kea(text: str, installed: Installed) -> None:
    """Test the new config in the running Kea, write it, load it (same process)."""
    config = kea_config(text, installed)
    path = Path(installed.kea_socket or config["Dhcp4"]["control-socket"]["socket-name"])
    answer = kea_command(path, "config-test", config)
    if answer.get("result") != 0:
        raise ApplyError(f"Kea refused the new config ({path}: config-test: "
                         f"{answer.get('text', 'no reason given')}); nothing changed")
    body = text if installed.kea_socket is None and installed.kea_leases is None \
        else "".join(f"{line}\n" for line in text.splitlines() if line.startswith("//")) \
        + kea.dumps(config) + "\n"
    before = _swap({installed.kea_conf: body})
    answer = kea_command(path, "config-set", config)
    if answer.get("result") != 0:
        _swap(before)
        raise ApplyError(f"Kea did not take the new config ({path}: config-set: "
                         f"{answer.get('text', 'no reason given')}); "
                         f"{installed.kea_conf} is as it was")


# -- dnsmasq ---------------------------------------------------------------------------------

def apply_dnsmasq(files: Mapping[str, str], installed: Installed) -> None:
    """Check the per-node lines (`dnsmasq --test`), write the hosts and options files, then
    SIGHUP dnsmasq (it re-reads them)."""
    try:
        pid = int(installed.dnsmasq_pid.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError) as e:
        raise ApplyError(f"dnsmasq: no running process in {installed.dnsmasq_pid} "
                         f"({getattr(e, 'strerror', None) or e}); nothing changed") from e
    with tempfile.TemporaryDirectory(prefix="tcbuild-dnsmasq-") as scratch:
        check = Path(scratch) / "dnsmasq-check.conf"
        check.write_text(dnsmasq.inlined(files[dnsmasq.CONF], files[dnsmasq.HOSTS],
                                         files[dnsmasq.OPTS]))
        problem = _command(["dnsmasq", "--test", f"--conf-file={check}"], "dnsmasq --test")
    if problem is not None:
        raise ApplyError(f"{problem}; nothing changed")
    before = _swap({installed.dnsmasq_hosts: files[dnsmasq.HOSTS],
                    installed.dnsmasq_opts: files[dnsmasq.OPTS]})
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        _swap(before)
        raise ApplyError(f"dnsmasq (pid {pid}): cannot signal it ({e.strerror}); "
                         "the previous files are back") from e


# -- ISC dhcpd, rsyslog: check, write, restart -------------------------------------------------

def apply_restarted(path: Path, text: str, restart: Sequence[str], what: str,
                    check: Sequence[str] | None = None) -> None:
    """Write `path`, check it (`check` + the path), restart; on failure the previous file is
    back and restarted with."""
    before = _swap({path: text})
    problem = _command([*check, path], f"{what}: {' '.join(check)}") if check else None
    if problem is not None:
        _swap(before)
        raise ApplyError(f"{problem}; {path} is as it was (nothing restarted)")
    problem = _command(restart, f"{what}: {' '.join(restart)}")
    if problem is not None:
        _swap(before)
        _command(restart, what)
        raise ApplyError(f"{problem}; the previous {path} is back, restarted with")


def apply_dhcpd(text: str, installed: Installed) -> None:
    apply_restarted(installed.dhcpd_conf, text, installed.dhcpd_restart, "dhcpd",
                    ("dhcpd", "-4", "-t", "-cf"))


def apply_rsyslog(text: str, installed: Installed) -> None:
    apply_restarted(installed.rsyslog_conf, text, installed.rsyslog_restart, "rsyslog")
