"""The seed's cluster in network namespaces: the boot server's daemons, the gateway, the nodes.

Everything is started from what tcbuild wrote (tests/kit/netns.py's `Lab` keeps it off the host):
ISC dhcpd, tftpd-hpa, rsyslogd and NFS-Ganesha run in the boot server's namespace from the
generated files; the node QEMUs hang on two bridges, the internal one (the boot server) and the
external one (the gateway). Used by tests/test_cluster_e2e.py, tests/test_daemons.py and
`make demo`.
"""

from __future__ import annotations

import shlex
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tcbuild.config.inventory import Host, Inventory
from tcbuild.fleet import boottest

from .bootkit import FAILURE_MARKERS
from .netns import Daemon, Lab, run, wait_for

NFS_PORT = 2049
NFS_PROGRAM, NFS_V4 = 100003, 4


def start_ganesha(lab: Lab, namespace: str, conf: Path, share: Path, export: str,
                  name: str = "ganesha") -> Daemon:
    """ganesha.nfsd with the generated `conf`, serving `share` at the export path `export`.

    Only the log and pid file are moved, by command-line flags. In its own mount namespace the
    export path is `share` bind-mounted, and /srv, /var/lib and /run (where Ganesha keeps its
    NFSv4 recovery data and run files) are copy-on-write: nothing reaches the host's.
    """
    q, workdir = shlex.quote, lab.workdir
    setup = f"mkdir -p {q(export)}\nmount --bind {q(str(share))} {q(export)}"
    daemon = lab.start(namespace, name, [
        "ganesha.nfsd", "-F", "-f", conf, "-L", workdir / f"{name}.out",
        "-p", workdir / f"{name}.pid", "-N", "NIV_EVENT"],
        private=["/srv", "/var/lib", "/run"], setup=setup)
    log = workdir / f"{name}.out"
    wait_for(lambda: log.exists() and "NFS SERVER INITIALIZED" in log.read_text(errors="replace"),
             "ganesha.nfsd initialized", watch=[daemon], timeout=30)
    return daemon


NFS_NULL_PROBE = f"""
import socket, struct, sys
call = struct.pack(">10I", 0x7c1, 0, 2, {NFS_PROGRAM}, {NFS_V4}, 0, 0, 0, 0, 0)
with socket.create_connection((sys.argv[1], {NFS_PORT}), timeout=5) as s:
    s.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
    reply = b""
    while len(reply) < 4 + 24:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
sys.stdout.write(reply.hex())
"""


def nfs_null(lab: Lab, namespace: str, address: str) -> tuple[int, int, int]:
    """An RPC NULL call to NFSv4 at `address`, made from a namespace of the lab.

    Returns (message type, reply status, accept status): (1, 0, 0) is an accepted, successful
    reply from an NFS server that speaks version 4.
    """
    if namespace not in lab.namespaces:
        raise ValueError(f"{namespace} is not a namespace of this lab")
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c",
                           NFS_NULL_PROBE, address], capture_output=True, text=True, timeout=15,
                          check=False)
    if done.returncode != 0:
        raise AssertionError(f"NFS NULL call to {address}:{NFS_PORT} failed: {done.stderr}")
    reply = bytes.fromhex(done.stdout)
    xid, kind, status, _flavor, _length, accept = struct.unpack(">6I", reply[4:28])
    assert xid == 0x7c1, reply
    return kind, status, accept


# -- the cluster ---------------------------------------------------------------------------

TIMER_PANIC = "IO-APIC + timer doesn't work"  # TCG on an overloaded host, now and then
INTERNET = "198.51.100.7"  # an address beyond the gateway (TEST-NET-2), on the gateway's lo
GAME_PORT = 27960


def external_mac(host: Host) -> str:
    """The node's second NIC (eth0, the public network): not in the inventory, made up here."""
    return "52:54:00:ee:" + ":".join(f"{int(o):02x}" for o in str(host.second_ip).split(".")[2:])


@dataclass
class Node:
    host: Host
    qemu: Daemon
    console: Path
    command: list[str]
    restarts: int = 0  # power cycles after the emulator's timer panic (TIMER_PANIC)

    def text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""


@dataclass
class Cluster:
    """Three namespaces: the boot server, the gateway, and the wire (bridges and QEMUs' taps).

    The boot server (`boot`) and the gateway (`gateway`) each hold one end of a veth pair
    whose other end is in a bridge of `wire`: the internal network (br-int) and the external
    one (br-ext). Each node's two NICs are taps on those bridges; QEMU runs in `wire`.
    """

    lab: Lab
    inventory: Inventory
    work: Path
    files: dict[str, Path]  # what `tcbuild server-config` wrote, by name
    tftp: Path
    share: Path
    logs: Path
    build_id: str
    boot: str = ""
    gateway: str = ""
    wire: str = ""
    daemons: dict[str, Daemon] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c, lab = self.inventory.cluster, self.lab
        self.boot, self.gateway, self.wire = (lab.namespace("boot"), lab.namespace("gateway"),
                                              lab.namespace("wire"))
        for bridge in ("br-int", "br-ext"):
            lab.ip(self.wire, "link", "add", bridge, "type", "bridge")
            lab.ip(self.wire, "link", "set", bridge, "up")
        lab.interfaces |= {"br-int", "br-ext"}
        lab.link(self.boot, "int0", self.wire, "boot0")
        lab.ip(self.wire, "link", "set", "boot0", "master", "br-int")
        lab.link(self.gateway, "ext0", self.wire, "gw0")
        lab.ip(self.wire, "link", "set", "gw0", "master", "br-ext")
        lab.ip(self.boot, "addr", "add", f"{c.boot_server}/{c.internal_subnet.prefixlen}",
               "dev", "int0")
        lab.ip(self.gateway, "addr", "add",
               f"{c.external_gateway}/{c.external_network.prefixlen}", "dev", "ext0")
        lab.ip(self.gateway, "addr", "add", f"{INTERNET}/32", "dev", "lo")

    # -- the boot server's daemons, from the generated files ----------------------------

    def start_dhcpd(self) -> Daemon:
        leases = self.work / "dhcpd.leases"
        leases.touch()
        dhcpd = self.lab.start(self.boot, "dhcpd", [
            "dhcpd", "-4", "-f", "-d", "-cf", self.files["dhcpd.conf"], "-lf", leases,
            "-pf", self.work / "dhcpd.pid", "int0"])
        dhcpd.wait_for_output("Server starting service.")
        self.daemons["dhcpd"] = dhcpd
        return dhcpd

    def start_tftpd(self) -> Daemon:
        """in.tftpd as Debian's init script runs it, with the generated defaults' values;
        only the directory is the test's."""
        conf = shell_defaults(self.files["tftpd-hpa"].read_text())
        tftpd = self.lab.start(self.boot, "tftpd", [
            "in.tftpd", "-L", "--user", conf["TFTP_USERNAME"], "--address", conf["TFTP_ADDRESS"],
            *shlex.split(conf["TFTP_OPTIONS"]), self.tftp])
        host, _, port = conf["TFTP_ADDRESS"].rpartition(":")
        wait_for(lambda: bound(tftpd, "udp", host or "0.0.0.0", int(port)), "tftpd listening",
                 watch=[tftpd])
        self.daemons["tftpd"] = tftpd
        return tftpd

    def start_rsyslogd(self) -> Daemon:
        rsyslogd = self.lab.start(self.boot, "rsyslogd", [
            "rsyslogd", "-n", "-f", self.files["rsyslog-tcbuild.conf"],
            "-i", self.work / "rsyslogd.pid"])
        port = self.inventory.cluster.syslog_port
        wait_for(lambda: bound(rsyslogd, "udp", "0.0.0.0", port), "rsyslogd listening",
                 watch=[rsyslogd])
        self.daemons["rsyslogd"] = rsyslogd
        return rsyslogd

    def start_ganesha(self) -> Daemon:
        c = self.inventory.cluster
        ganesha = start_ganesha(self.lab, self.boot, self.files["ganesha.conf"], self.share,
                                c.nfs_export)
        self.daemons["ganesha"] = ganesha
        return ganesha

    def stop(self, name: str) -> None:
        self.daemons.pop(name).stop()

    # -- the nodes --------------------------------------------------------------------------

    def taps(self, index: int) -> tuple[str, str]:
        """Node `index`'s two tap devices in the wire namespace: on the internal bridge (its
        PXE NIC) and on the external one."""
        internal, external = f"tap{index}i", f"tap{index}e"
        for tap, bridge in ((internal, "br-int"), (external, "br-ext")):
            self.lab.ip(self.wire, "tuntap", "add", "dev", tap, "mode", "tap")
            self.lab.ip(self.wire, "link", "set", tap, "master", bridge)
            self.lab.ip(self.wire, "link", "set", tap, "up")
            self.lab.interfaces.add(tap)
        return internal, external

    def boot_node(self, host: Host, index: int) -> Node:
        """QEMU as `host`: eth0 on the external bridge, eth1 (its MAC, PXE) on the internal."""
        internal, external = self.taps(index)
        console = (self.work / f"{host.name}.console").absolute()
        tap = "tap,id={},ifname={},script=no,downscript=no"
        command = boottest.pxe_command(
            self.tftp, console, host.mac, netdev=tap.format("n0", internal),
            external=(tap.format("ext", external), external_mac(host)))
        node = Node(host, self.lab.start(self.wire, f"qemu-{host.name}", command), console,
                    command)
        self.nodes[host.name] = node
        return node

    def check_nodes(self) -> None:
        """Fail at once when a node's boot failed; power-cycle a node once after the timer
        panic that an overloaded host gives QEMU's TCG (the emulator's, not the image's)."""
        for node in self.nodes.values():
            text = node.text()
            verdict = boottest.judge(text, None, FAILURE_MARKERS)
            if verdict is None:
                continue
            if TIMER_PANIC not in text or node.restarts >= 1:
                raise AssertionError(f"{node.host.name}: {verdict[1]}\n{text[-3000:]}")
            node.qemu.stop()
            node.restarts += 1
            node.console.replace(node.console.with_name(f"{node.console.name}.{node.restarts}"))
            node.qemu = self.lab.start(self.wire, f"qemu-{node.host.name}-{node.restarts}",
                                       node.command)

    def wait_console(self, node: Node, text: str, timeout: float) -> None:
        """Until the node's console shows `text` (not in its kernel command line)."""
        self.wait(lambda: boottest.judge(node.text(), text, ()) is not None,
                  f"'{text}' on {node.host.name}'s console", timeout)



    def log(self, name: str) -> str:
        path = self.logs / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        """Until `condition` holds; fails at once if a daemon or a node's QEMU exits, or a
        node's boot fails (see `check_nodes`)."""

        def done() -> bool:
            self.check_nodes()
            return condition()

        wait_for(done, what, timeout=timeout,
                 watch=[*self.daemons.values(), *(n.qemu for n in self.nodes.values())])

    def wait_log(self, name: str, text: str, timeout: float) -> None:
        """Until the log host's file `name` has `text`."""
        self.wait(lambda: text in self.log(name), f"'{text}' in {name}", timeout)

    def nfs_clients(self) -> set[str]:
        """Addresses with an established TCP connection to the NFS server's port 2049."""
        return {peer.rpartition(":")[0] for local, peer, state in tcp_sockets(
                self.daemons["ganesha"]) if state == "01" and local.endswith(f":{NFS_PORT}")}

    def ping_from_internet(self, address: str) -> bool:
        """Whether `address` answers a ping sent from beyond the gateway (INTERNET): only a
        node whose default route leads through the gateway can reply."""
        done = run("ip", "netns", "exec", self.gateway, "busybox", "ping", "-c", "1", "-W", "3",
                   "-I", INTERNET, address, check=False)
        return done.returncode == 0


    def view(self, host: Host) -> list[str]:
        """What the boot server (and the gateway) know of a node, for people to read."""
        c = self.inventory.cluster
        acks = [line for line in self.daemons["dhcpd"].output().splitlines()
                if line.startswith(f"DHCPACK on {host.ip} to {host.mac} ")]
        beyond = self.ping_from_internet(str(host.second_ip))
        heartbeats = [m for m in self.log(f"{host.name}.log").splitlines()
                      if f" {c.game_log_tag}: heartbeat " in m]
        log = self.log(f"{host.name}.log").splitlines()
        shown = [line for line in log if " kernel: " not in line]
        game = f"running, last {heartbeats[-1].split(' ', 2)[2]}" if heartbeats else "not seen"
        hidden = len(log) - len(shown)
        return [
            f"{host.name} ({host.mac}, {host.ip})",
            f"  dhcpd:          {acks[-1] if acks else 'no DHCPACK'} "
            f"({len(acks)}: the PXE firmware's, then dhclient's)",
            f"  second address: {host.second_ip} on eth0: "
            + ("answers a ping from beyond the gateway" if beyond else "NO answer from beyond"),
            f"  NFS share:      {c.nfs_server}:{c.nfs_export} "
            + ("mounted (Ganesha serves it)" if str(host.ip) in self.nfs_clients()
               else "NOT mounted"),
            f"  game server:    {game}",
            f"  {self.logs / (host.name + '.log')} ({hidden} kernel lines not shown):",
            *(f"    {line}" for line in shown),
            f"  {self.logs / (host.name + '-err.log')}:",
            *(f"    {line}" for line in self.log(f"{host.name}-err.log").splitlines()),
        ]


def shell_defaults(text: str) -> dict[str, str]:
    """The variables of a shell-sourced defaults file such as /etc/default/tftpd-hpa."""
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            (values[name.strip()],) = shlex.split(value)
    return values


def _address(hex_address: str) -> str:
    address, port = hex_address.split(":")
    return f"{'.'.join(str(b) for b in reversed(bytes.fromhex(address)))}:{int(port, 16)}"


def tcp_sockets(daemon: Daemon) -> list[tuple[str, str, str]]:
    """(local, peer, state) of the IPv4 and IPv4-mapped TCP sockets in the daemon's namespace."""
    rows = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{daemon.pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, peer = fields[1], fields[2]
            if table == "tcp6":  # ::ffff:a.b.c.d is 0000000000000000FFFF0000 + the address
                if not local.startswith("0000000000000000FFFF0000"):
                    continue
                local, peer = local[24:], peer[24:]
            rows.append((_address(local), _address(peer), fields[3]))
    return rows


def bound(daemon: Daemon, table: str, address: str, port: int) -> bool:
    """Whether the daemon's namespace has a socket of `table` (udp, tcp) bound to address:port."""
    octets = bytes(int(o) for o in address.split("."))
    local = f"{int.from_bytes(octets, 'little'):08X}:{port:04X}"
    rows = Path(f"/proc/{daemon.pid}/net/{table}").read_text().splitlines()[1:]
    return any(row.split()[1] == local for row in rows)


GAME_ERROR = "no map rotation configured: serving the default map"
GAME_SERVER = """#!/bin/sh
# The game server of the cluster test, run by the node's bootlocal.sh from the NFS share as
# an unprivileged user. Like the seed's, it reports errors itself with logger at local0.
echo "game server up as $(id -un) in $PWD"
{error}n=0
while :; do
    n=$((n + 1))
    echo "heartbeat $n"
    sleep 5
done
"""


def fill_share(share: Path, command: str, tag: str, error: str | None = GAME_ERROR) -> Path:
    """The share's game server program (world-readable: the export squashes root); it logs
    `error` once at its start (None: a healthy game server, no error)."""
    share.mkdir(mode=0o755, exist_ok=True)
    share.chmod(0o755)
    program = share / command
    said = f'logger -t {tag} -p local0.err "{error}"\n' if error else ""
    program.write_text(GAME_SERVER.format(error=said))
    program.chmod(0o755)
    return program


def with_log_dir(inventory: Path, copy: Path, logs: Path) -> Path:
    """A copy of the inventory whose log host writes into `logs` (the rest unchanged)."""
    text = inventory.read_text()
    copy.write_text(text.replace("[cluster]\n", f'[cluster]\nlog_dir = "{logs}"\n', 1))
    return copy
