"""`tcbuild rollout`: waves, the durable record, and the whole loop against stand-in nodes
(`tests/kit/fakenode.py`: power-cycling one writes what the log host would receive from the
release its pxelinux config names), with real builds, a real TFTP tree and real log files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcbuild.boot.pxelinux import mac_config_name
from tcbuild.config.inventory import Inventory
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.config.recipefile import load_recipe
from tcbuild.errors import InputError, StateError, TcbuildError
from tcbuild.fleet.rollout import hosts_of, parse_waves, plan_waves, wave_sizes
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions, build
from tcbuild.stages.publish import publish_all
from tcbuild.stages.rollout import RolloutOptions, resume, rollout
from tcbuild.tftproot import rollout as record
from tcbuild.tftproot.releases import default_release
from tcbuild.tftproot.rollout import HostState, Phase
from tcbuild.tftproot.state import configs

from .conftest import verified
from .kit.fakenode import FakeNodes

ROOT = Path(__file__).resolve().parent.parent
FAST = RolloutOptions(waves="1,100%", healthy_for=0.2, boot_timeout=5.0, poll=0.05)


def tcbuild(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


# -- waves and hosts (pure) --------------------------------------------------------------------


@pytest.mark.parametrize(("hosts", "sizes"), [(3, [1, 2, 3]), (10, [1, 3, 10]), (1, [1]),
                                              (4, [1, 2, 4]), (0, [])])
def test_waves_are_cumulative_rounded_up_with_a_new_host_each(hosts: int, sizes: list[int]
                                                              ) -> None:
    assert wave_sizes(parse_waves("1,25%,100%"), hosts) == sizes


def test_the_last_wave_reaches_every_host_and_bad_waves_are_one_line() -> None:
    assert wave_sizes(parse_waves("2,50%"), 10) == [2, 5, 10]
    assert wave_sizes(parse_waves("5,3"), 10) == [5, 6, 10]
    for bad, what in (("1,x", "'x' is not a count"), ("0,100%", "'0' is out of range"),
                      ("101%", "'101%' is out of range")):
        with pytest.raises(InputError, match=f"^--waves {bad}: {what}"):
            parse_waves(bad)


def inventory(tmp_path: Path, site: Path | None = None) -> Inventory:
    """The example inventory with a third host, server3."""
    base = (site or ROOT) / "examples/cluster.toml"
    text = base.read_text() + ('\n[[host]]\nname = "server3"\nmac = "52:54:00:12:34:58"\n'
                               'ip = "10.1.1.7"\nsecond_ip = "172.16.1.7"\n')
    path = (site or tmp_path) / "examples/cluster3.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return load_inventory(path)


def test_hosts_are_those_of_the_recipe_and_the_canary_goes_first(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    hosts = hosts_of(ROOT / "recipes/gameserver.toml", inv)
    assert [h.name for h in hosts] == ["server1", "server2", "server3"]  # canary: append only
    waves = plan_waves(hosts, "1,25%,100%", canary="server3")
    assert [[h.name for h in w] for w in waves] == [["server3"], ["server1"], ["server2"]]
    with pytest.raises(InputError, match="^--canary nobody: not one of the hosts"):
        plan_waves(hosts, canary="nobody")
    other_recipe = tmp_path / "other.toml"
    other_recipe.write_text((ROOT / "recipes/gameserver.toml").read_text())
    grouped = inv.path.read_text().replace('[group.canary]', '[group.canary]\nrecipe = '
                                           f'"{other_recipe}"')
    inv.path.write_text(grouped)
    other = load_inventory(inv.path)
    assert [h.name for h in hosts_of(ROOT / "recipes/gameserver.toml", other)] == [
        "server1", "server3"]
    assert [h.name for h in hosts_of(other_recipe, other)] == ["server2"]


# -- a cluster of stand-in nodes on release A ----------------------------------------------------


@dataclass
class Cluster:
    site: Path
    tftp: Path
    logs: Path
    inventory: Inventory
    nodes: FakeNodes
    old: str  # release A

    def recipe(self) -> object:
        return load_recipe(self.site / "recipes/gameserver.toml")

    def options(self) -> BuildOptions:
        return BuildOptions(out_dir=self.site / "build/gameserver",
                            fetch=FetchOptions(cache_dir=self.site / "cache"))

    def change_image(self, text: str = "changed") -> None:
        conf = self.site / "overlays/gameserver/usr/local/etc/dhclient.conf"
        conf.write_text(conf.read_text() + f"# {text}\n")

    def roll(self, options: RolloutOptions = FAST, **kwargs: object) -> object:
        return rollout(self.recipe(), [self.tftp], self.inventory,  # type: ignore[arg-type]
                       self.options(), self.logs, options, self.nodes,
                       self.site / "bootloader", say=lambda line: None, **kwargs)

    def booted(self) -> dict[str, str | None]:
        return {h.name: default_or_own(self.tftp, h.mac) for h in self.inventory.hosts}


def default_or_own(tftp: Path, mac: str) -> str | None:
    found = configs(tftp)
    config = found.get(mac_config_name(mac), found["default"])
    return config.label(config.default).kernel.split("/")[2]


@pytest.fixture
def cluster(site: Path) -> Cluster:
    inv = inventory(site, site)
    tftp, logs = site / "tftp", site / "logs"
    logs.mkdir()
    recipe = load_recipe(site / "recipes/gameserver.toml")
    plans = publish_all(recipe, [tftp], BuildOptions(
        out_dir=site / "build/gameserver", fetch=FetchOptions(cache_dir=site / "cache")),
        inv, bootloader_dir=site / "bootloader")
    nodes = FakeNodes(tftp, logs)
    for host in inv.hosts:
        nodes.boot(host)
    return Cluster(site, tftp, logs, inv, nodes, plans[0].release_id)


def test_a_good_release_reaches_every_host_wave_by_wave(cluster: Cluster) -> None:
    cluster.change_image()
    before = set(configs(cluster.tftp))
    outcome = cluster.roll()
    new = outcome.release  # type: ignore[attr-defined]
    assert cluster.nodes.cycled == ["server1", "server2", "server3"]  # wave 1: the first host
    assert default_release(cluster.tftp) == new
    assert set(cluster.booted().values()) == {new}
    assert set(configs(cluster.tftp)) == before  # the per-MAC configs it made are gone again
    state = record.read(cluster.tftp)
    assert state is not None and state.phase is Phase.DONE
    assert {h.state for h in state.hosts.values()} == {HostState.HEALTHY}
    verified(cluster.tftp)
    shown = tcbuild("fleet", "--inventory", cluster.inventory.path, "--logs", cluster.logs,
                    "--tftp", cluster.tftp, "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert [(n["state"], n["rollout"]["state"]) for n in view["hosts"]] == [
        ("current", "healthy")] * 3
    assert (view["rollout"]["phase"], view["rollout"]["release"]) == ("done", state.release)
    assert [r["id"] for r in view["releases"] if "default" in r["configs"]] == [state.release]


def test_a_bad_canary_is_reverted_and_nobody_else_rebooted(cluster: Cluster) -> None:
    cluster.change_image("bad")
    cluster.nodes.bad.add(build(cluster.recipe(), cluster.options()  # type: ignore[arg-type]
                                ).build_id[:12])
    with pytest.raises(TcbuildError) as failed:
        cluster.roll(RolloutOptions(waves="1,100%", canary="server2", healthy_for=0.2,
                                    boot_timeout=5.0, poll=0.05))
    (line,) = failed.value.lines
    assert line.startswith("rollout of ") and ": server2: an error since its boot" in line
    assert "last error master: fatal: cannot load libgame.so" in line
    assert cluster.nodes.cycled == ["server2", "server2"]  # to C, then back; nobody else
    assert set(cluster.booted().values()) == {cluster.old}
    state = record.read(cluster.tftp)
    assert state is not None and state.phase is Phase.FAILED
    assert [state.hosts[n].state for n in ("server1", "server2", "server3")] == [
        HostState.PENDING, HostState.REVERTED, HostState.PENDING]
    verified(cluster.tftp)


# -- drain ---------------------------------------------------------------------------------------


class Recorded(FakeNodes):
    """Stand-in nodes whose power-cycles go into the same events file as the drain script's."""

    events: Path

    def cycle(self, host: object) -> None:
        with self.events.open("a") as f:
            f.write(f"cycle {host.name}\n")  # type: ignore[attr-defined]
        super().cycle(host)  # type: ignore[arg-type]


def drain_script(site: Path, yes_after: int) -> Path:
    """A drain command that says busy (exit 1) until its `yes_after`-th call for a host."""
    script = site / "drain.sh"
    script.write_text(f"""#!/bin/sh
counter="{site}/drain-$1.count"
n=$(( $(cat "$counter" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$counter"
echo "drain $1 $n" >> "{site}/events"
[ "$n" -ge {yes_after} ]
""")
    script.chmod(0o755)
    return script


def test_a_busy_host_is_power_cycled_only_once_its_drain_says_yes(cluster: Cluster) -> None:
    cluster.change_image()
    nodes = Recorded(cluster.tftp, cluster.logs)
    nodes.events = cluster.site / "events"
    cluster.nodes = nodes
    script = drain_script(cluster.site, 3)
    cluster.roll(RolloutOptions(waves="1,100%", healthy_for=0.2, boot_timeout=5.0, poll=0.05,
                                drain_command=f"{script} {{name}}"))
    events = nodes.events.read_text().splitlines()
    assert events[:4] == ["drain server1 1", "drain server1 2", "drain server1 3",
                          "cycle server1"]
    assert [e for e in events if e.startswith("cycle")] == [
        "cycle server1", "cycle server2", "cycle server3"]


def test_a_drain_busy_past_its_timeout_fails_the_wave_and_nobody_reboots(cluster: Cluster
                                                                        ) -> None:
    cluster.change_image()
    script = drain_script(cluster.site, 1_000_000)
    with pytest.raises(TcbuildError, match=r"^rollout of \S+: server1: drain did not succeed "
                                           r"within 0\.3 s$"):
        cluster.roll(RolloutOptions(waves="1,100%", healthy_for=0.2, boot_timeout=5.0,
                                    poll=0.05, drain_timeout=0.3,
                                    drain_command=f"{script} {{name}}"))
    assert cluster.nodes.cycled == []
    assert set(cluster.booted().values()) == {cluster.old}
    assert mac_config_name("52:54:00:12:34:56") not in configs(cluster.tftp)  # switched back
    verified(cluster.tftp)


# -- killed, resumed, aborted; the other commands wait -------------------------------------------

KILLED = """
import sys
from pathlib import Path
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.config.recipefile import load_recipe
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions
from tcbuild.stages.rollout import RolloutOptions, rollout
from tests.kit.fakenode import FakeNodes

site, inventory = Path(sys.argv[1]), Path(sys.argv[2])
options = BuildOptions(out_dir=site / "build/gameserver",
                       fetch=FetchOptions(cache_dir=site / "cache"))
rollout(load_recipe(site / "recipes/gameserver.toml"), [site / "tftp"],
        load_inventory(inventory), options, site / "logs",
        RolloutOptions(waves="1,100%", healthy_for=0.2, boot_timeout=5, poll=0.05),
        FakeNodes(site / "tftp", site / "logs", hang=["server2"]), site / "bootloader")
"""


def killed_mid_wave(cluster: Cluster) -> None:
    """A rollout killed (-9) while it power-cycles server2 in wave 2."""
    cluster.change_image()
    process = subprocess.Popen([sys.executable, "-c", KILLED, cluster.site,
                                cluster.inventory.path], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = read_quietly(cluster.tftp)
            if state is not None and state.hosts["server2"].state is HostState.REBOOTING:
                break
            assert process.poll() is None, "the rollout ended before wave 2"
            time.sleep(0.05)
        else:
            pytest.fail("wave 2 never began")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def read_quietly(tftp: Path) -> record.Rollout | None:
    try:
        return record.read(tftp)
    except StateError:
        return None


def test_killed_mid_wave_then_resumed_finishes(cluster: Cluster) -> None:
    killed_mid_wave(cluster)
    state = record.read(cluster.tftp)
    assert state is not None and state.phase is Phase.RUNNING and state.wave == 1
    verified(cluster.tftp)  # a tree mid-rollout is sound
    site = cluster.site
    for args in (("publish", site / "recipes/gameserver.toml", "--tftp", cluster.tftp,
                  "--bootloader-dir", site / "bootloader", "--cache", site / "cache"),
                 ("rollback", "--tftp", cluster.tftp),
                 ("rollout", site / "recipes/gameserver.toml", "--tftp", cluster.tftp,
                  "--inventory", cluster.inventory.path, "--manual-reboot")):
        refused = tcbuild(*args)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.endswith(
            f"{cluster.tftp}/tcbuild/rollout.json: rollout of release {state.release} is "
            f"running (wave 2 of 2); {args[0]} refused: finish it with `tcbuild rollout "
            "--resume` or undo it with `tcbuild rollout --abort`\n"), refused.stderr
    shown = tcbuild("fleet", "--inventory", cluster.inventory.path, "--logs", cluster.logs,
                    "--tftp", cluster.tftp)
    assert f"rollout of release {state.release}: running, wave 2 of 2" in shown.stdout
    assert re.search(r"server1 +wave 1 +healthy", shown.stdout), shown.stdout
    nodes = FakeNodes(cluster.tftp, cluster.logs)
    resume([cluster.tftp], nodes, say=lambda line: None, poll=0.05)
    assert nodes.cycled == ["server2", "server3"]  # server2 again: its cycle never finished
    assert set(cluster.booted().values()) == {state.release}
    assert default_release(cluster.tftp) == state.release
    verified(cluster.tftp)


def test_killed_mid_wave_then_aborted_returns_every_host(cluster: Cluster) -> None:
    killed_mid_wave(cluster)
    nodes = FakeNodes(cluster.tftp, cluster.logs)
    outcome = resume([cluster.tftp], nodes, abort=True, say=lambda line: None, poll=0.05)
    assert outcome.lines == ("server1: reverted", "server2: reverted")
    assert nodes.cycled == ["server1", "server2"]
    assert set(cluster.booted().values()) == {cluster.old}
    state = record.read(cluster.tftp)
    assert state is not None and state.phase is Phase.ABORTED
    again = tcbuild("rollout", "--resume", "--tftp", cluster.tftp)
    assert again.returncode == 2 and again.stderr.endswith("is aborted already\n")
    verified(cluster.tftp)


# -- the command: dry run, power, a damaged record -----------------------------------------------


def rollout_cli(cluster: Cluster, *more: str | Path) -> subprocess.CompletedProcess[str]:
    site = cluster.site
    return tcbuild("rollout", site / "recipes/gameserver.toml", "--tftp", cluster.tftp,
                   "--inventory", cluster.inventory.path, "--logs", cluster.logs,
                   "--bootloader-dir", site / "bootloader", "--cache", site / "cache", *more)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_dry_run_prints_the_waves_and_changes_nothing(cluster: Cluster) -> None:
    cluster.change_image()
    before = tree(cluster.tftp)
    shown = rollout_cli(cluster, "--dry-run", "--manual-reboot", "--canary", "server3",
                        "--drain-command", "true")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert re.fullmatch(r"rollout of release \S+: 3 wave\(s\), 3 host\(s\)", lines[0])
    assert [line for line in lines if line.startswith("wave")] == [
        "wave 1: server3", "wave 2: server1", "wave 3: server2"]
    assert "drained; asked to be rebooted by hand; waited for until healthy" in lines[2]
    assert lines[-1].startswith("then pxelinux.cfg/default -> ")
    assert tree(cluster.tftp) == before


def test_hosts_without_power_control_refuse_the_rollout_naming_them(cluster: Cluster) -> None:
    before = tree(cluster.tftp)
    refused = rollout_cli(cluster)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"{cluster.inventory.path}: host {name}: no bmc and no power_command to power-cycle it "
        "(or give --manual-reboot)" for name in ("server1", "server2", "server3")]
    cluster.nodes.no_power.add("server3")
    with pytest.raises(InputError, match=r"host server3: no bmc and no power_command"):
        cluster.roll()
    assert tree(cluster.tftp) == before


def test_a_damaged_record_is_one_line_and_refuses_publish(cluster: Cluster) -> None:
    path = cluster.tftp / record.ROLLOUT
    path.write_text("{not json")
    checked = tcbuild("verify", "--tftp", cluster.tftp)
    assert checked.returncode == 1
    assert checked.stderr.startswith(f"{path}: not a JSON file (")
    refused = tcbuild("rollback", "--tftp", cluster.tftp)
    assert refused.returncode == 1 and refused.stderr.startswith(f"rollback: {path}: not a JSON")
    assert len(refused.stderr.splitlines()) == 1
    state = {"release": "r", "build_id": "b", "phase": "running", "wave": 0,
             "waves": [["server1"]], "configs": {}, "default_before": None,
             "owns_default": True, "recipe": "x", "inventory": "y", "logs": "z",
             "hosts": {"server1": {"config": "01-x", "before": None, "old_release": None,
                                   "state": "sleeping", "cycled": None}}}
    path.write_text(json.dumps(state))
    with pytest.raises(StateError, match=r"rollout\.json: hosts\.server1\.state: 'sleeping' is "
                                         r"not one of pending, draining, "):
        record.read(cluster.tftp)
    state["hosts"]["server1"]["state"] = "pending"  # type: ignore[index]
    path.write_text(json.dumps(state))
    read = record.read(cluster.tftp)
    assert read is not None and read.text() == record.Rollout.parse(
        record.Fields.parse(read.text().decode(), "again")).text()  # a round trip


def with_power_command(cluster: Cluster, bad: str = "-") -> None:
    """Every host power-cycled through the inventory's `power_command`: a stand-in node."""
    start = (f"import sys, runpy; sys.path.insert(0, {str(ROOT)!r}); sys.argv[0] = 'fakenode'; "
             "runpy.run_module('tests.kit.fakenode', run_name='__main__')")
    command = (f'{sys.executable} -c "{start}" {cluster.tftp} {cluster.logs} '
               f"{cluster.inventory.path} {bad} {{action}} {{name}}")
    text = cluster.inventory.path.read_text().replace(
        "[cluster]\n", f"[cluster]\npower_command = '''{command}'''\n", 1)
    cluster.inventory.path.write_text(text)
    cluster.inventory = load_inventory(cluster.inventory.path)


def test_the_command_rolls_out_through_power_command(cluster: Cluster) -> None:
    with_power_command(cluster)
    cluster.change_image()
    done = rollout_cli(cluster, "--waves", "1,100%", "--healthy-for", "0.2", "--poll", "0.05",
                       "--boot-timeout", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "wave 1 of 2: server1"
    assert done.stdout.splitlines()[-1].endswith("rolled out to 3 host(s)")
    assert (cluster.logs / "power.log").read_text().splitlines() == [
        "cycle server1", "cycle server2", "cycle server3"]
    assert len(set(cluster.booted().values())) == 1
    assert set(cluster.booted().values()) != {cluster.old}
    verified(cluster.tftp)


def test_the_command_names_a_failed_canary_and_exits_1(cluster: Cluster) -> None:
    cluster.change_image("bad")
    bad = build(cluster.recipe(), cluster.options()).build_id[:12]  # type: ignore[arg-type]
    with_power_command(cluster, bad)
    failed = rollout_cli(cluster, "--waves", "1,100%", "--healthy-for", "0.2", "--poll",
                         "0.05", "--boot-timeout", "20", "--canary", "server3")
    assert failed.returncode == 1
    (line,) = failed.stderr.splitlines()
    assert re.fullmatch(rf"rollout of \S+-{bad}: server3: an error since its boot; last boot "
                        rf"\S+ build {bad}, last error master: fatal: cannot load libgame\.so",
                        line), line
    assert (cluster.logs / "power.log").read_text().splitlines() == [
        "cycle server3", "cycle server3"]
    assert set(cluster.booted().values()) == {cluster.old}
