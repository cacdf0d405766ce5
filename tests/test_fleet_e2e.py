"""Enrollment and rollout, proven on booted nodes in one shared lab (tests/kit/fleetlab.py).

The example cluster in network namespaces: the boot server runs Kea (control socket on),
tftpd-hpa, rsyslogd and NFS-Ganesha from what `tcbuild server-config` wrote; server1, server2
and a machine the inventory does not know are QEMU nodes, each behind its own BMC (OpenIPMI's
ipmi_sim, IPMI over LAN). The tests run in order on the same lab, each starting from where the
last left it: the blank machine is discovered and enrolled as server3 (Kea reloaded live), then
a good release rolls out in waves over the three, then a bad one fails on its canary and is
rolled back; a rollout killed with SIGKILL is aborted, another killed is resumed. All is
judged from the boot server's side (the log host's files, Kea's log and leases, Ganesha's
connections), the gateway's (the public address) and the BMCs' (when each node's QEMU was
started). The times measured are printed (`-s`), kept in MEASURED for docs/rollout.md, enroll.md.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tcbuild.boot.pxelinux import mac_config_name
from tcbuild.bootserver.files import Dhcp
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.tftproot import rollout as record
from tcbuild.tftproot.releases import default_release, releases
from tcbuild.tftproot.rollout import HostState, Phase, Rollout
from tcbuild.tftproot.state import Release

from .conftest import ROOT
from .kit.clusterlab import Cluster, external_mac, fill_share
from .kit.dhcplab import acknowledged
from .kit.fleetlab import DISCOVERY, NEWCOMER, BmcNode, FleetLab, lab_inventory
from .kit.netns import Lab, host_interfaces, host_state, run
from .kit.nodekit import publish, tcbuild
from .kit.requires import require_root, require_tool

BOOT_TIMEOUT = 240.0  # seconds from a power-on to the game server, three nodes under TCG
HEALTHY_FOR = 10  # seconds a node must stay healthy in a rollout wave
CRASH = "crash"  # release C's game server: the share's program that exits with an error
CRASH_ERROR = "fatal: cannot load libgame.so"
MEASURED: dict[str, float] = {}


def measured(what: str, seconds: float) -> None:
    MEASURED[what] = round(seconds, 1)
    print(f"\nMEASURED {what}: {seconds:.1f} s", flush=True)


@pytest.fixture(scope="module")
def fleet(pxe_mirror: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetLab]:
    """The example published as release A (the lab's inventory: BMCs, a discovery range), the
    boot server's daemons running; no node powered on yet."""
    require_root("network namespaces, veth pairs and mounts")
    for tool, package in (("kea-dhcp4", "kea-dhcp4-server"), ("in.tftpd", "tftpd-hpa"),
                          ("rsyslogd", "rsyslog"), ("ganesha.nfsd", "nfs-ganesha"),
                          ("busybox", "busybox-static"), ("ipmi_sim", "openipmi"),
                          ("ipmitool", "ipmitool")):
        require_tool(tool, package)
    site = tmp_path_factory.mktemp("fleet")
    for name in ("recipes", "overlays", "examples"):
        shutil.copytree(ROOT / name, site / name)
    recipe = site / "recipes/gameserver.toml"
    recipe.write_text(re.sub(r"^mirrors = .*$", f'mirrors = ["{pxe_mirror}"]',
                             recipe.read_text(), count=1, flags=re.M))
    (site / "tftp").mkdir()
    logs = site / "remote"
    logs.mkdir()
    inventory_file = site / "examples/cluster.toml"
    lab_inventory(inventory_file, logs, site / "bmc.pw")
    build_id = publish(site)
    done = tcbuild(site, "server-config", "examples/cluster.toml", "--out", "server")
    assert done.returncode == 0, done.stderr
    inventory = load_inventory(inventory_file)
    tag = inventory.cluster.game_log_tag
    fill_share(site / "share", "master", tag, error=None)
    crash = site / "share" / CRASH
    crash.write_text(f"#!/bin/sh\necho 'game server up'\necho '{CRASH_ERROR}' >&2\nexit 3\n")
    crash.chmod(0o755)
    workdir = site / "lab"
    workdir.mkdir()
    before, interfaces = host_state(), host_interfaces()
    with Lab(workdir) as lab:
        cluster = Cluster(lab, inventory, workdir, {p.name: p for p in (site / "server").iterdir()},
                          (site / "tftp").resolve(), site / "share", logs, build_id)
        lab_ = FleetLab(cluster, site, inventory_file)
        try:
            lab_.start_boot_server()
            yield lab_
        finally:
            lab_.close()
        names = lab.namespaces[:]
    assert host_state() == before
    assert not (host_interfaces() - interfaces) & lab.interfaces
    assert not set(names) & set(run("ip", "netns", "list").stdout.split())
    print(f"\nMEASURED (all): {MEASURED}")


def current(tftp: Path) -> Release:
    """The release `pxelinux.cfg/default` boots."""
    return {r.id: r for r in releases(tftp)}[default_release(tftp)]


def fleet_states(fleet: FleetLab) -> dict[str, tuple[str, str]]:
    """(state, build) of each inventory host, as `tcbuild fleet --json` says."""
    return {name: (n["state"], n["build"]) for name, n in fleet.fleet_json().items()
            if n["name"] is not None}


def test_a_blank_machine_is_discovered_enrolled_and_served(fleet: FleetLab) -> None:
    c = fleet.cluster
    tag = c.inventory.cluster.game_log_tag
    for host in c.inventory.hosts:
        fleet.power_on(host.name, host.mac, external_mac(host))
    newcomer = fleet.power_on("newcomer", *NEWCOMER)
    for host in c.inventory.hosts:
        fleet.wait_log(f"{host.name}.log", f"{tag}: heartbeat 1", BOOT_TIMEOUT)

    # Discovered: its report reached the place for unknown senders, Kea's lease bears it out.
    unknown = c.logs / "unknown"
    c.wait(lambda: any(NEWCOMER[0] in p.read_text(errors="replace")
                       for p in unknown.glob("*") if p.is_file()) if unknown.is_dir() else False,
           "the newcomer's report", BOOT_TIMEOUT)
    measured("blank machine: power-on -> reported for discovery", time.time()
             - newcomer.starts()[0])
    new = fleet.fleet_json()[NEWCOMER[0]]
    low, high = (IPv4Address(a) for a in DISCOVERY.split("-"))
    assert new["state"] == "new" and low <= IPv4Address(new["ip"]) <= high, new
    assert {n["mac"] for n in new["hardware"]["nics"]} == set(NEWCOMER), new
    assert any(line.startswith(f"{NEWCOMER[0]}  new  {new['ip']}  ")
               for line in fleet.fleet().splitlines())

    # Enrolled as server3: the inventory gains one table, Kea takes it live (same process).
    text = fleet.inventory_file.read_text()
    kea = fleet.kea
    assert kea is not None
    pid = kea.pid
    done = fleet.tcbuild("enroll", NEWCOMER[0], "--inventory", fleet.inventory_file,
                         "--tftp", "tftp", "--bmc", newcomer.url, *fleet.apply_options())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "enrolled server3 (52:54:00:12:34:60, 10.1.1.7, 172.16.1.7)" in done.stdout, done.stdout
    added = fleet.inventory_file.read_text()
    assert added.startswith(text) and added[len(text):].count("[[host]]") == 1, added
    assert kea.pid == pid and kea.process.poll() is None
    server3 = load_inventory(fleet.inventory_file).hosts[-1]
    assert (server3.name, server3.mac) == ("server3", NEWCOMER[0])

    # Power-cycled through its BMC: a second QEMU process, which boots the game-server image.
    c.wait(lambda: len(newcomer.starts()) == 2, "the newcomer power-cycled by its BMC", 30)
    cycled = newcomer.starts()[1]
    serving = fleet.wait_log("server3.log", f"{tag}: heartbeat 1", BOOT_TIMEOUT)
    measured("enrolled machine: power-cycle -> game served", serving - cycled)
    assert acknowledged(Dhcp.KEA, kea, server3, "int0")  # its fixed address, from the same Kea
    assert c.ping_from_internet(str(server3.second_ip))
    assert str(server3.ip) in c.nfs_clients()
    leases = (fleet.kea_dir / "leases4.csv").read_text()
    for host in c.inventory.hosts:  # the others' leases kept through the reload
        assert f"{host.ip},{host.mac}" in leases, leases
    assert kea.pid == pid
    states = fleet_states(fleet)
    assert states["server3"] == ("current", c.build_id), states
    assert NEWCOMER[0] not in fleet.fleet_json()


def change_recipe(fleet: FleetLab, game_command: str | None = None, note: str | None = None
                  ) -> None:
    """A new release: a changed overlay (`note`), or another game command."""
    if note is not None:
        path = fleet.site / "overlays/gameserver/usr/local/etc/release-note"
        path.write_text(note + "\n")
    if game_command is not None:
        recipe = fleet.site / "recipes/gameserver.toml"
        recipe.write_text(re.sub(r'^game_command\s*=\s*"[^"]*"',
                                 f'game_command = "{game_command}"', recipe.read_text(),
                                 count=1, flags=re.M))


def rollout_args(fleet: FleetLab, *options: str) -> list[str | Path]:
    """`tcbuild rollout` of the recipe in waves 1 then 100%, with the lab's times."""
    return ["rollout", "recipes/gameserver.toml", "--tftp", "tftp", "--inventory",
            fleet.inventory_file, "--cache", "cache", "--waves", "1,100%", "--healthy-for",
            str(HEALTHY_FOR), "--boot-timeout", str(BOOT_TIMEOUT), "--poll", "1", *options]


def rollout(fleet: FleetLab, *options: str) -> tuple[int, str, float]:
    started = time.monotonic()
    done = fleet.tcbuild(*rollout_args(fleet, *options))
    print(done.stdout + done.stderr, flush=True)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def bmc_nodes(fleet: FleetLab) -> dict[str, BmcNode]:
    """The nodes by inventory name (the newcomer was enrolled as server3)."""
    return {"server1": fleet.nodes["server1"], "server2": fleet.nodes["server2"],
            "server3": fleet.nodes["newcomer"]}


def booted(cluster: Cluster, name: str, build: str) -> float:
    """When the log host received the node's last boot line naming `build`."""
    found = [line for line in cluster.log(f"{name}.log").splitlines()
             if f" bootlocal: game-server node, build {build}, " in line]
    assert found, name
    return datetime.fromisoformat(found[-1].split(" ", 1)[0]).timestamp()


def test_a_good_release_rolls_out_in_waves(fleet: FleetLab) -> None:
    c = fleet.cluster
    names = ["server1", "server2", "server3"]
    starts = {name: len(node.starts()) for name, node in bmc_nodes(fleet).items()}
    change_recipe(fleet, note="release B")
    code, out, seconds = rollout(fleet, "--canary", "server1")
    assert code == 0, out
    measured("rollout B (1 then 100%, 3 nodes): whole command", seconds)
    waves = [float(s) for s in re.findall(r"^wave \d+: healthy in (\d+) s$", out, re.M)]
    assert len(waves) == 2, out
    measured("rollout B: wave 1 (canary) power-cycle -> healthy", waves[0])
    measured("rollout B: wave 2 (2 nodes) power-cycle -> healthy", waves[1])
    b = current(c.tftp)
    assert b.id in out
    # Every node power-cycled once, server1 first (the BMCs' record of QEMU starts).
    nodes = bmc_nodes(fleet)
    for name, node in nodes.items():
        assert len(node.starts()) == starts[name] + 1, name
    last = {name: node.starts()[-1] for name, node in nodes.items()}
    assert last["server1"] < min(last["server2"], last["server3"]), last
    # Each node's boot (its BMC's power-on -> its boot line on the log host), per wave.
    boots = {name: booted(c, name, b.build_id[:12]) - last[name] for name in names}
    measured("rollout B: wave 1 boot (power-on -> boot line)", boots["server1"])
    measured("rollout B: wave 2 boot, slower of two", max(boots["server2"], boots["server3"]))
    states = fleet_states(fleet)
    assert all(states[n] == ("current", b.build_id[:12]) for n in names), states
    configs = sorted(p.name for p in (c.tftp / "pxelinux.cfg").iterdir())
    server2 = "01-" + fleet.nodes["server2"].mac.replace(":", "-")
    assert configs == [server2, "default", "discovery"], configs  # server2: its group's append
    assert b.id in (c.tftp / "pxelinux.cfg" / server2).read_text()
    done = record.read(c.tftp)
    assert done is not None and done.phase is Phase.DONE and done.release == b.id
    kea = fleet.kea
    assert kea is not None and kea.process.poll() is None  # the reloaded Kea served them all


def test_a_bad_release_fails_on_its_canary_and_is_rolled_back(fleet: FleetLab) -> None:
    c = fleet.cluster
    b = current(c.tftp)
    nodes = bmc_nodes(fleet)
    starts = {name: len(node.starts()) for name, node in nodes.items()}
    change_recipe(fleet, game_command=CRASH)
    code, out, seconds = rollout(fleet)
    assert code == 1, out
    measured("rollout C: failed canary, reverted and healthy on B", seconds)
    assert re.search(r"server1: an error since its boot; last boot \S+ build [0-9a-f]{12}, "
                     rf"last error .*{CRASH_ERROR}", out), out
    assert "server2:" not in out and "server3:" not in out
    # The canary was cycled twice (to C, back to B); the others never.
    assert len(nodes["server1"].starts()) == starts["server1"] + 2
    assert len(nodes["server2"].starts()) == starts["server2"]
    assert len(nodes["server3"].starts()) == starts["server3"]
    assert current(c.tftp) == b
    assert max(r.id for r in releases(c.tftp)) != b.id  # C staged, never made the default
    states = fleet_states(fleet)
    assert all(states[n][1] == b.build_id[:12] for n in nodes), states


def per_mac_configs(fleet: FleetLab) -> list[str]:
    """`pxelinux.cfg`'s files; after a finished rollout: `default`, `discovery` and server2's
    own (its group's append), which must name `default`'s release."""
    return sorted(p.name for p in (fleet.cluster.tftp / "pxelinux.cfg").iterdir())


def killed_rollout(fleet: FleetLab, name: str, when: Callable[[Rollout], bool], what: str,
                   timeout: float) -> tuple[Rollout, float]:
    """A rollout (waves 1 then 100%, server1 first) started as its own process, killed with
    SIGKILL as soon as its record in the tree says `when`; the record then, and when (monotonic)
    it was killed. `name` names the output file."""
    tftp = fleet.cluster.tftp
    staged = {r.id for r in releases(tftp)}
    output = fleet.site / f"{name}.out"
    process = fleet.start_tcbuild(output, *rollout_args(fleet, "--canary", "server1"))

    def seen() -> bool:
        assert process.poll() is None, f"the rollout ended before {what}:\n{output.read_text()}"
        state = record.read(tftp)
        return state is not None and state.release not in staged and when(state)

    try:
        fleet.cluster.wait(seen, what, timeout)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    killed = time.monotonic()
    print(output.read_text(), flush=True)
    assert process.returncode == -signal.SIGKILL
    state = record.read(tftp)
    assert state is not None and state.phase is Phase.RUNNING, state
    return state, killed


def power_cycled(state: Rollout, name: str) -> bool:
    """The record says the host's power-cycle was done (it is booting the new release)."""
    host = state.hosts[name]
    return host.state is HostState.REBOOTING and host.cycled is not None


def test_a_rollout_killed_in_its_first_wave_is_aborted_back_to_b(fleet: FleetLab) -> None:
    c = fleet.cluster
    b = current(c.tftp)
    nodes = bmc_nodes(fleet)
    starts = {name: len(node.starts()) for name, node in nodes.items()}
    change_recipe(fleet, game_command="master", note="release D")  # C's game server back
    state, killed = killed_rollout(
        fleet, "rollout-d-aborted", lambda s: power_cycled(s, "server1")
        and len(nodes["server1"].starts()) == starts["server1"] + 1,
        "server1 power-cycled into D (record and BMC)", BOOT_TIMEOUT)
    assert state.wave == 0 and state.waves == (("server1",), ("server2", "server3")), state

    # While it is unfinished: publish refuses at once, naming it; the fleet view shows it.
    staged = {r.id for r in releases(c.tftp)}
    asked = time.monotonic()
    refused = fleet.tcbuild("publish", "recipes/gameserver.toml", "--tftp", "tftp",
                            "--cache", "cache")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr == (
        f"tftp/tcbuild/rollout.json: rollout of release {state.release} is running (wave 1 "
        "of 2); publish refused: finish it with `tcbuild rollout --resume` or undo it with "
        "`tcbuild rollout --abort`\n"), refused.stderr
    assert time.monotonic() - asked < 15  # no build before the refusal
    assert {r.id for r in releases(c.tftp)} == staged
    shown = fleet.fleet()
    assert f"rollout of release {state.release}: running, wave 1 of 2" in shown, shown
    assert re.search(r"server1 +wave 1 +rebooting", shown), shown
    assert re.search(r"server3 +wave 2 +pending", shown), shown

    started = time.monotonic()
    done = fleet.tcbuild("rollout", "--abort", "--tftp", "tftp")
    print(done.stdout + done.stderr, flush=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1:] == ["server1: reverted"], done.stdout
    measured("rollout D killed in wave 1: --abort (switch back, cycle, boot B)",
             time.monotonic() - started)
    measured("rollout D killed in wave 1: kill -> aborted, server1 back on B",
             time.monotonic() - killed)
    aborted = record.read(c.tftp)
    assert aborted is not None and aborted.phase is Phase.ABORTED, aborted
    # From the BMCs' side: server1 cycled twice (into D, back to B), the others never.
    assert len(nodes["server1"].starts()) == starts["server1"] + 2
    assert len(nodes["server2"].starts()) == starts["server2"]
    assert len(nodes["server3"].starts()) == starts["server3"]
    assert booted(c, "server1", b.build_id[:12]) > nodes["server1"].starts()[-1]
    states = fleet_states(fleet)
    assert all(states[n] == ("current", b.build_id[:12]) for n in nodes), states
    assert current(c.tftp) == b
    server2 = mac_config_name(nodes["server2"].mac)
    assert per_mac_configs(fleet) == [server2, "default", "discovery"]
    assert b.id in (c.tftp / "pxelinux.cfg" / server2).read_text()


def test_a_rollout_killed_in_its_second_wave_is_resumed(fleet: FleetLab) -> None:
    c = fleet.cluster
    nodes = bmc_nodes(fleet)
    starts = {name: len(node.starts()) for name, node in nodes.items()}
    state, killed = killed_rollout(  # D again (the aborted release stays staged)
        fleet, "rollout-d-resumed", lambda s: s.wave == 1
        and all(power_cycled(s, n) and len(nodes[n].starts()) == starts[n] + 1
                for n in ("server2", "server3")),
        "wave 2 power-cycled (record and BMCs)", 2 * BOOT_TIMEOUT)
    assert state.hosts["server1"].state is HostState.HEALTHY, state
    assert all(len(nodes[n].starts()) == starts[n] + 1 for n in nodes), starts
    refused = fleet.tcbuild("rollback", "--tftp", "tftp")
    assert refused.returncode == 1 and refused.stderr.startswith(
        f"tftp/tcbuild/rollout.json: rollout of release {state.release} is running (wave 2 "
        "of 2); rollback refused"), refused.stderr

    started = time.monotonic()
    done = fleet.tcbuild("rollout", "--resume", "--tftp", "tftp")
    print(done.stdout + done.stderr, flush=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"release {state.release} rolled out to 3 host(s)" in done.stdout, done.stdout
    measured("rollout D killed in wave 2: --resume (waits for the wave, switches default)",
             time.monotonic() - started)
    measured("rollout D killed in wave 2: kill -> resumed and done", time.monotonic() - killed)
    finished = record.read(c.tftp)
    assert finished is not None and finished.phase is Phase.DONE, finished
    assert finished.release == state.release
    # Nobody power-cycled again by --resume: their cycles were done before the kill.
    assert all(len(nodes[n].starts()) == starts[n] + 1 for n in nodes), starts
    d = current(c.tftp)
    assert d.id == state.release
    states = fleet_states(fleet)
    assert all(states[n] == ("current", d.build_id[:12]) for n in nodes), states
    server2 = mac_config_name(nodes["server2"].mac)
    assert per_mac_configs(fleet) == [server2, "default", "discovery"]
    assert d.id in (c.tftp / "pxelinux.cfg" / server2).read_text()
