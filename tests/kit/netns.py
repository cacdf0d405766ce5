"""Network namespaces and daemons for the daemon tests, always torn down again.

A `Lab` creates namespaces named after this process (parallel runs never clash), joins them
with veth pairs and starts processes in them. Every `ip` command it runs names a namespace it
created (`ip -n NS ...`): nothing here configures the host's own network. Each process also
gets a private mount namespace in which /dev (and any other directory asked for) is overlaid
copy-on-write on a tmpfs: writes there, such as busybox syslogd creating /dev/log, stay in
that namespace, and /dev/log is removed from its view so no daemon logs into the host's
syslog. `close` stops every process by its pid, then deletes the namespaces.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

TIMEOUT = 15.0  # seconds for anything the daemons do here; each normally takes well under 1 s


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command; a failure raises with its output."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                            timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{shlex.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def wait_for(condition: Callable[[], bool], what: str, *, timeout: float = TIMEOUT,
             watch: Sequence[Daemon] = ()) -> None:
    """Poll until `condition` holds; fail at the timeout, or as soon as a watched daemon exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        for daemon in watch:
            if daemon.process.poll() is not None:
                raise AssertionError(f"{daemon.name} exited ({daemon.process.returncode}) while "
                                     f"waiting for {what}:\n{daemon.output()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {d.name}:\n{d.output()}" for d in watch)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(0.02)


class Daemon:
    """A process started in a namespace; its pid is the program's own (every wrapper execs)."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def path(self, path: str) -> Path:
        """`path` as this process sees it, through its own mount namespace."""
        return Path(f"/proc/{self.pid}/root") / path.lstrip("/")

    def wait_for_output(self, text: str) -> None:
        wait_for(lambda: text in self.output(), f"'{text}' from {self.name}", watch=[self])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; by pid only."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=3)


class Lab:
    """Network namespaces joined by veth pairs, and the daemons started in them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.interfaces: set[str] = set()
        self.daemons: list[Daemon] = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, role: str) -> str:
        """A new network namespace with its loopback up."""
        name = f"tcbuild-{os.getpid()}-{len(self.namespaces)}-{role}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        return name

    def ip(self, namespace: str, *args: str) -> str:
        """`ip -n NAMESPACE ...` in a namespace of this lab (never the host's)."""
        if namespace not in self.namespaces:
            raise ValueError(f"{namespace} is not a namespace of this lab")
        return run("ip", "-n", namespace, *args).stdout

    def link(self, a: str, a_name: str, b: str, b_name: str, mac: str | None = None) -> None:
        """A veth pair from `a_name` in namespace a to `b_name` (with `mac`) in b, both up."""
        self.interfaces |= {a_name, b_name}
        self.ip(a, "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b)
        if mac:
            self.ip(b, "link", "set", b_name, "address", mac)
        self.ip(a, "link", "set", a_name, "up")
        self.ip(b, "link", "set", b_name, "up")

    def bridge(self, namespace: str, address: str, name: str = "br0") -> None:
        """A bridge in `namespace` holding `address` (CIDR), up; ports join it with `link`."""
        self.ip(namespace, "link", "add", name, "type", "bridge")
        self.interfaces.add(name)
        self.ip(namespace, "addr", "add", address, "dev", name)
        self.ip(namespace, "link", "set", name, "up")

    def start(self, namespace: str, name: str, argv: Sequence[str | Path], *,
              uts: bool = False, private: Sequence[str] = (), setup: str = "") -> Daemon:
        """Start argv in the namespace, in new mount (and with `uts`, UTS) namespaces.

        /dev and the `private` directories are overlaid copy-on-write first, /dev/log is
        removed from view, then the `setup` shell lines run; output goes to NAME.log.
        """
        if namespace not in self.namespaces:
            raise ValueError(f"{namespace} is not a namespace of this lab")
        rw = self.workdir / f"{name}.rw"
        rw.mkdir()
        script = [f"mount -t tmpfs -o mode=0755 tcbuild {shlex.quote(str(rw))}"]
        for i, directory in enumerate(["/dev", *private]):
            upper, work = rw / f"{i}.upper", rw / f"{i}.work"
            options = f"lowerdir={directory},upperdir={upper},workdir={work}"
            script += [f"mkdir {shlex.quote(str(upper))} {shlex.quote(str(work))}",
                       f"mount -t overlay tcbuild -o {shlex.quote(options)} {directory}"]
        script += ["rm -f /dev/log", setup, 'exec "$@"']
        command = ["ip", "netns", "exec", namespace, "unshare", "--mount",
                   *(["--uts"] if uts else []), "--", "sh", "-ec", "\n".join(script), name,
                   *map(str, argv)]
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT)
        daemon = Daemon(name, process, log)
        self.daemons.append(daemon)
        return daemon

    def close(self) -> None:
        """Stop every daemon (by pid), then delete every namespace; report what failed."""
        problems = []
        for daemon in reversed(self.daemons):
            try:
                daemon.stop()
            except (OSError, subprocess.SubprocessError) as e:
                problems.append(f"stopping {daemon.name} (pid {daemon.pid}): {e}")
        for namespace in reversed(self.namespaces):
            result = run("ip", "netns", "delete", namespace, check=False)
            if result.returncode != 0:
                problems.append(f"deleting {namespace}: {result.stderr.strip()}")
        self.daemons.clear()
        self.namespaces.clear()
        if problems:
            raise AssertionError("lab cleanup failed: " + "; ".join(problems))


def host_state() -> dict[str, object]:
    """What the live tests must leave as it is: hostname, resolver, syslog socket, /etc/dhcp."""

    def identity(path: str) -> tuple[int, int, int] | None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mode, st.st_mtime_ns

    resolv = Path("/etc/resolv.conf")
    return {
        "hostname": socket.gethostname(),
        "resolv.conf": (identity(str(resolv)), resolv.read_bytes() if resolv.exists() else None),
        "/etc/resolv.conf*": sorted(p.name for p in Path("/etc").glob("resolv.conf*")),
        "/dev/log": identity("/dev/log"),
        "/etc/dhcp": sorted(p.name for p in Path("/etc/dhcp").glob("*")),
    }


def host_interfaces() -> set[str]:
    """The interfaces of the host's own network namespace (read from sysfs, not changed)."""
    return {p.name for p in Path("/sys/class/net").iterdir()}
