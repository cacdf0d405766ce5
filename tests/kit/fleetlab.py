"""The fleet lab: the cluster lab with Kea, a BMC per node and a machine nobody enrolled yet.

It is tests/kit/clusterlab.py's cluster (boot server, gateway, wire), with these differences:
the boot server runs Kea (control socket on, so `enroll --apply kea` reloads it live) instead
of dhcpd, and rsyslogd under a small supervisor (the restart command `enroll --apply` runs
kills it; the supervisor starts it again with the rewritten rules). Each node is a QEMU
machine behind its own BMC: OpenIPMI's `ipmi_sim` (IPMI over LAN on 127.0.0.1 in the wire
namespace, see ../shared notes bmc.md) whose `startcmd` is the node's QEMU command line with
QEMU's `ipmi-bmc-extern` + `isa-ipmi-kcs` devices; every power-on is a new QEMU process, its
start time recorded, so the order of reboots can be read from the BMCs' side. tcbuild's
commands that power-cycle run in the wire namespace, where the BMCs are.

Used by tests/test_fleet_e2e.py and `make demo` (tests/kit/demo.py). Every ipmi_sim and QEMU
is stopped by its pid, every namespace deleted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcbuild.fleet import boottest

from .bmcsim import EMU, LAN_CONF, PASSWORD, USER
from .clusterlab import Cluster, bound
from .dhcplab import start_kea
from .netns import Daemon, Lab, wait_for

ROOT = Path(__file__).resolve().parents[2]
DISCOVERY = "10.1.1.200-10.1.1.250"
NEWCOMER = ("52:54:00:12:34:60", "52:54:00:ee:00:60")  # not in the inventory: eth1 (PXE), eth0
BMC_PORT = 9001  # the first BMC's LAN port (127.0.0.1, wire namespace); its serial is +1

NODE = """#!/bin/sh
# The BMC's machine: one QEMU process per power-on, its start time and pid recorded first.
echo "$(date +%s.%N)" >> {dir}/starts
echo $$ > {dir}/pid
n=$(wc -l < {dir}/starts)
if [ -f {console} ]; then mv {console} {console}.$((n - 1)); fi
exec {command}
"""


# rsyslogd, started again whenever it exits; TERM stops both (the restart kills rsyslogd only).
RSYSLOG_SUPERVISOR = """child=
trap 'kill "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
while :; do
    rsyslogd -n -f "$1" -i "$2" &
    child=$!
    echo "$child" > "$3"
    wait "$child" || :
    sleep 0.2
done
"""
RSYSLOG_RESTART = """#!/bin/sh
# `enroll --apply`'s rsyslog restart in the lab: the supervisor starts it again.
old=$(cat {child})
kill "$old"
while [ "$(cat {child})" = "$old" ]; do sleep 0.1; done
sleep 1
"""


@dataclass
class BmcNode:
    """A QEMU node behind its ipmi_sim; `starts` are the times of its power-ons."""

    name: str
    mac: str
    root: Path
    port: int
    console: Path
    bmc: Daemon

    @property
    def url(self) -> str:
        return f"ipmi://127.0.0.1:{self.port}"

    def starts(self) -> list[float]:
        path = self.root / "starts"
        return [float(t) for t in path.read_text().split()] if path.exists() else []

    def text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def qemu_pid(self) -> int | None:
        """The running QEMU's pid (None once it exited)."""
        path = self.root / "pid"
        if not path.exists() or not path.read_text().strip():
            return None
        pid = int(path.read_text())
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
        except (OSError, IndexError):
            return None
        return pid if b"qemu-system" in command and state != "Z" else None

    def stop(self) -> None:
        """The BMC first (so it starts nothing more), then its QEMU: both by pid."""
        self.bmc.stop()
        pid = self.qemu_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


def lab_inventory(path: Path, logs: Path, password_file: Path) -> dict[str, int]:
    """The example inventory made the lab's in place: its log host writes into `logs`, a
    discovery range, BMC credentials, and each host a BMC; the BMC ports by host name."""
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    text = path.read_text().replace("[cluster]\n", (
        f'[cluster]\nlog_dir = "{logs}"\ndiscovery = "{DISCOVERY}"\nbmc_user = "{USER}"\n'
        f'bmc_password_file = "{password_file}"\n'), 1)
    names = re.findall(r'^name\s*=\s*"([^"]+)"', text, flags=re.M)
    ports = {name: BMC_PORT + 2 * i for i, name in enumerate(names)}
    for name, port in ports.items():
        text = re.sub(rf'^(name\s*=\s*"{name}".*)$', rf'\1\nbmc       = "ipmi://127.0.0.1:{port}"',
                      text, count=1, flags=re.M)
    path.write_text(text)
    return ports


@dataclass
class FleetLab:
    """The cluster with Kea and BMC nodes; `site` is the operator's directory (recipes,
    inventory, tftp, cache) where tcbuild's commands run."""

    cluster: Cluster
    site: Path
    inventory_file: Path
    nodes: dict[str, BmcNode] = field(default_factory=dict)
    kea: Daemon | None = None

    @property
    def lab(self) -> Lab:
        return self.cluster.lab

    @property
    def kea_dir(self) -> Path:
        return self.cluster.work / "kea"

    def start_kea(self) -> Daemon:
        self.kea = start_kea(self.lab, self.cluster.boot, "kea",
                             self.cluster.files["kea-dhcp4.conf"].read_text(), self.kea_dir)
        self.kea.wait_for_output("DHCP4_STARTED")
        self.cluster.daemons["kea"] = self.kea
        return self.kea

    def start_rsyslogd(self) -> Daemon:
        work = self.cluster.work
        child = work / "rsyslogd.child"
        daemon = self.lab.start(self.cluster.boot, "rsyslogd", [
            "sh", "-c", RSYSLOG_SUPERVISOR, "rsyslog-supervisor",
            self.cluster.files["rsyslog-tcbuild.conf"], work / "rsyslogd.pid", child])
        restart = work / "rsyslog-restart"
        restart.write_text(RSYSLOG_RESTART.format(child=shlex.quote(str(child))))
        restart.chmod(0o755)
        port = self.cluster.inventory.cluster.syslog_port
        wait_for(lambda: bound(daemon, "udp", "0.0.0.0", port), "rsyslogd listening",
                 watch=[daemon])
        self.cluster.daemons["rsyslogd"] = daemon
        return daemon

    def start_boot_server(self) -> None:
        self.start_kea()
        self.cluster.start_tftpd()
        self.start_rsyslogd()
        self.cluster.start_ganesha()

    def power_on(self, name: str, mac: str, external_mac: str) -> BmcNode:
        """A node's BMC started in the wire namespace; it powers the node's QEMU on at once."""
        c, index = self.cluster, len(self.nodes)
        internal, external = c.taps(index)
        root = (c.work / f"bmc-{name}").absolute()
        (root / "state").mkdir(parents=True)
        port = BMC_PORT + 2 * index
        console = root / "console"
        tap = "tap,id={},ifname={},script=no,downscript=no"
        command = [*boottest.pxe_command(c.tftp, console, mac, netdev=tap.format("n0", internal),
                                         external=(tap.format("ext", external), external_mac)),
                   "-chardev", f"socket,id=ipmi0,host=127.0.0.1,port={port + 1},reconnect=2",
                   "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
                   "-device", "isa-ipmi-kcs,bmc=bmc0"]
        node_sh = root / "node.sh"
        node_sh.write_text(NODE.format(dir=shlex.quote(str(root)),
                                       console=shlex.quote(str(console)),
                                       command=shlex.join(command)))
        node_sh.chmod(0o755)
        (root / "lan.conf").write_text(LAN_CONF.format(
            name=f"bmc-{name}", port=port, serial=port + 1, node=node_sh, user=USER,
            password=PASSWORD))
        (root / "bmc.emu").write_text(EMU)
        bmc = self.lab.start(c.wire, f"ipmi_sim-{name}", [
            "ipmi_sim", "-c", root / "lan.conf", "-f", root / "bmc.emu", "-n", "-s",
            root / "state"])
        node = BmcNode(name, mac, root, port, console, bmc)
        self.nodes[name] = node
        c.daemons[f"ipmi_sim-{name}"] = bmc
        wait_for(lambda: node.qemu_pid() is not None, f"{name}'s QEMU started by its BMC",
                 watch=[bmc])
        return node

    def tcbuild_argv(self, *args: str | Path) -> list[str]:
        """`tcbuild ARGS` in the wire namespace (where the BMCs answer); `ip netns exec`
        execs it, so the process's pid is tcbuild's own."""
        return ["ip", "netns", "exec", self.cluster.wire, sys.executable, "-m", "tcbuild",
                *map(str, args)]

    def tcbuild(self, *args: str | Path, timeout: float = 900
                ) -> subprocess.CompletedProcess[str]:
        """`tcbuild ARGS` from the site, in the wire namespace."""
        return subprocess.run(self.tcbuild_argv(*args), cwd=self.site, capture_output=True,
                              text=True, timeout=timeout, env=self.env(),
                              stdin=subprocess.DEVNULL)

    def start_tcbuild(self, output: Path, *args: str | Path) -> subprocess.Popen[bytes]:
        """`tcbuild ARGS` as `tcbuild` runs it, but started and left running, its output
        (stdout and stderr) into `output`. The caller stops it by its pid."""
        with output.open("wb") as out:
            return subprocess.Popen(self.tcbuild_argv(*args), cwd=self.site, stdout=out,
                                    stderr=subprocess.STDOUT, env=self.env(),
                                    stdin=subprocess.DEVNULL)

    @staticmethod
    def env() -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}

    def apply_options(self) -> list[str]:
        """`enroll --apply kea` aimed at the lab's Kea and rsyslog."""
        return ["--apply", "kea", "--kea-conf", str(self.kea_dir / "kea-dhcp4.conf"),
                "--kea-socket", str(self.kea_dir / "kea4-ctrl-socket"),
                "--kea-leases", str(self.kea_dir / "leases4.csv"),
                "--rsyslog-conf", str(self.cluster.files["rsyslog-tcbuild.conf"]),
                "--rsyslog-restart", str(self.cluster.work / "rsyslog-restart")]

    def fleet(self, *options: str) -> str:
        """`tcbuild fleet` (with `options`, such as --json) over the lab's logs, tree and Kea's
        lease file."""
        done = self.tcbuild("fleet", "--inventory", self.inventory_file, "--tftp", "tftp",
                            "--leases", self.kea_dir / "leases4.csv", *options)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def fleet_json(self) -> dict[str, dict[str, Any]]:
        """`fleet --json` by host name (a new machine by its MAC)."""
        report = json.loads(self.fleet("--json"))
        return {n["name"] or n["mac"]: n for n in [*report["hosts"], *report["new"]]}

    def wait_log(self, name: str, text: str, timeout: float) -> float:
        """Until the log host's file `name` has `text` (the nodes' QEMUs and BMCs watched);
        the time it was seen."""
        self.cluster.wait_log(name, text, timeout)
        return time.time()

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
