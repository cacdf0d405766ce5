"""Power control through the BMC: a real one (OpenIPMI's ipmi_sim on 127.0.0.1, its machine a
process that counts its starts), cross-checked with ipmitool; the site's own power_command; the
inventory's power keys; what a failure looks like."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcbuild import InputError, RecipeError
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.fleet.power import Action, power

from .kit.bmcsim import PASSWORD, USER, SimBmc, free_port
from .kit.requires import require_tool
from .test_inventory import CLUSTER

ROOT = Path(__file__).resolve().parent.parent


def host(n: int, extra: str = "") -> str:
    return (f'\n[[host]]\nname = "server{n}"\nmac = "52:54:00:12:34:{n:02x}"\n'
            f'ip = "10.1.1.{n + 4}"\nsecond_ip = "172.16.1.{n + 4}"\n{extra}')


def inventory(tmp_path: Path, text: str, password: str = PASSWORD, mode: int = 0o600) -> Path:
    secret = tmp_path / "bmc.pw"
    secret.write_text(password + "\n")
    secret.chmod(mode)
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def tcbuild(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[SimBmc]:
    require_tool("ipmi_sim", "openipmi")
    require_tool("ipmitool", "ipmitool")
    with SimBmc(tmp_path / "bmc1") as sim:
        yield sim


def with_bmc(tmp_path: Path, url: str, password: str = PASSWORD, mode: int = 0o600) -> Path:
    """One host whose BMC is `url`; the user and the password file come from [cluster]."""
    text = (CLUSTER + f'bmc_user = "{USER}"\nbmc_password_file = "bmc.pw"\n'
            + host(1, f'bmc = "{url}"\n'))
    return inventory(tmp_path, text, password, mode)


# -- a real BMC ----------------------------------------------------------------------------------

def test_status_off_on_cycle_through_the_bmc(tmp_path: Path, bmc: SimBmc) -> None:
    path = with_bmc(tmp_path, bmc.url)
    done = tcbuild("power", "status", "server1", "--inventory", path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "server1  on\n", "")
    assert bmc.ipmitool("chassis", "power", "status") == "Chassis Power is on"

    done = tcbuild("power", "off", "server1", "--inventory", path)
    assert (done.returncode, done.stdout) == (0, "server1  off: done\n"), done.stderr
    assert bmc.wait_for(lambda: not bmc.running())  # the machine's process was stopped
    assert bmc.ipmitool("chassis", "power", "status") == "Chassis Power is off"
    assert tcbuild("power", "status", "server1", "--inventory", path).stdout == "server1  off\n"

    assert tcbuild("power", "on", "server1", "--inventory", path).returncode == 0
    assert bmc.wait_for(lambda: bmc.running() and bmc.starts == 2)
    assert bmc.ipmitool("chassis", "power", "status") == "Chassis Power is on"

    done = tcbuild("power", "cycle", "server1", "--inventory", path, "--json")
    assert done.returncode == 0, done.stderr
    [shown] = json.loads(done.stdout)
    assert shown | {"seconds": 0} == {"host": "server1", "bmc": bmc.url, "action": "cycle",
                                      "ok": True, "state": None, "error": None, "seconds": 0}
    assert bmc.wait_for(lambda: bmc.starts == 3 and bmc.running())  # stopped, started again


def test_the_library_reports_the_bmc_s_state(tmp_path: Path, bmc: SimBmc) -> None:
    bmc.ipmitool("chassis", "power", "off")
    assert bmc.wait_for(lambda: not bmc.running())
    [result] = power(load_inventory(with_bmc(tmp_path, bmc.url)), ["SERVER1"], "status")
    assert (result.host, result.ok, result.state, result.action) == ("server1", True, "off",
                                                                     Action.STATUS)


def test_a_wrong_password_is_one_line_naming_host_and_bmc(tmp_path: Path, bmc: SimBmc) -> None:
    path = with_bmc(tmp_path, bmc.url, password="wrong")
    done = tcbuild("power", "off", "server1", "--inventory", path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"server1 ({bmc.url}): the BMC refused the password (ipmitool: "
                           "Error: Unable to establish IPMI v2 / RMCP+ session)\n")
    assert bmc.running() and bmc.starts == 1  # untouched


def test_an_unreachable_bmc_is_one_line_in_bounded_time(tmp_path: Path) -> None:
    require_tool("ipmitool", "ipmitool")
    url = f"ipmi://127.0.0.1:{free_port(2)}"  # a UDP port nobody listens on
    start = time.monotonic()
    done = tcbuild("power", "cycle", "server1", "--inventory", with_bmc(tmp_path, url))
    assert time.monotonic() - start < 15
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"server1 ({url}): the BMC did not answer (ipmitool: "
                                        "Error: Unable to establish IPMI v2 / RMCP+ session)"]


def test_a_password_file_others_may_read_is_refused(tmp_path: Path, bmc: SimBmc) -> None:
    path = with_bmc(tmp_path, bmc.url, mode=0o644)
    done = tcbuild("power", "off", "server1", "--inventory", path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"{tmp_path}/bmc.pw: the BMC password file may be read by others "
                           f"(mode 0644); chmod 600 it ({path}: cluster.bmc_password_file)\n")
    time.sleep(0.5)
    assert bmc.running() and bmc.ipmitool("chassis", "power", "status") == "Chassis Power is on"


def test_hosts_that_fail_do_not_stop_the_others(tmp_path: Path, bmc: SimBmc) -> None:
    require_tool("ipmitool", "ipmitool")
    closed = f"ipmi://127.0.0.1:{free_port(2)}"
    text = (CLUSTER + f'bmc_user = "{USER}"\nbmc_password_file = "bmc.pw"\n'
            + host(1, f'bmc = "{closed}"\n') + host(2, f'bmc = "{bmc.url}"\n'))
    results = power(load_inventory(inventory(tmp_path, text)), ["server1", "server2"], "off")
    assert [(r.host, r.bmc, r.ok) for r in results] == [("server1", closed, False),
                                                        ("server2", bmc.url, True)]
    assert bmc.wait_for(lambda: not bmc.running())


# -- the site's own command ----------------------------------------------------------------------

LOGGER = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/argv.log"
[ "$1" = status ] && echo "OFF (says the site's tool)"
[ "$2" = server3 ] && { echo "server3: PDU outlet jammed" >&2; exit 3; }
exit 0
"""


def test_power_command_fills_each_placeholder(tmp_path: Path) -> None:
    (tmp_path / "site-power").write_text(LOGGER)
    (tmp_path / "site-power").chmod(0o755)
    text = (CLUSTER + 'power_command = "./site-power {action} {name} mac={mac} ip={ip}"\n'
            + host(1) + host(2, 'bmc = "ipmi://10.9.9.2:6230"\npower_command = '
                              '"./site-power {action} {name} --bmc \'{bmc} x\'"\n')
            + host(3))
    path = inventory(tmp_path, text)
    done = tcbuild("power", "cycle", "server1", "server2", "--inventory", path)
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "server1  cycle: done\nserver2  cycle: done\n", "")
    assert sorted((tmp_path / "argv.log").read_text().splitlines()) == [
        "cycle server1 mac=52:54:00:12:34:01 ip=10.1.1.5",
        "cycle server2 --bmc 10.9.9.2:6230 x"]
    done = tcbuild("power", "status", "server1", "server3", "--inventory", path, "--json")
    assert done.returncode == 1
    shown = json.loads(done.stdout)
    assert [(r["host"], r["bmc"], r["ok"], r["state"], r["error"]) for r in shown] == [
        ("server1", "power_command", True, "off", None),
        ("server3", "power_command", False, None,
         "power_command exited with 3: server3: PDU outlet jammed")]


def test_hosts_are_done_at_once(tmp_path: Path) -> None:
    text = CLUSTER + 'power_command = "sleep 1"\n' + "".join(host(n) for n in range(1, 9))
    names = [f"server{n}" for n in range(1, 9)]
    start = time.monotonic()
    results = power(load_inventory(inventory(tmp_path, text)), names, "on")
    assert all(r.ok for r in results) and [r.host for r in results] == names
    assert time.monotonic() - start < 4  # eight one-second commands, not eight seconds


def test_a_status_that_is_not_on_or_off_is_a_failure(tmp_path: Path) -> None:
    text = CLUSTER + 'power_command = "echo maybe {name}"\n' + host(1)
    [result] = power(load_inventory(inventory(tmp_path, text)), ["server1"], "status")
    assert (result.ok, result.line()) == (
        False, "server1 (power_command): status said 'maybe server1', not on or off")


# -- bad input -----------------------------------------------------------------------------------

def test_unknown_hosts_are_one_line(tmp_path: Path) -> None:
    path = inventory(tmp_path, CLUSTER + host(1, 'power_command = "true"\n'))
    done = tcbuild("power", "on", "server1", "server7", "web", "--inventory", path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"{path}: no host 'server7', 'web' (hosts: server1)\n"


def test_nothing_is_done_unless_every_host_can_be_reached(tmp_path: Path) -> None:
    (tmp_path / "site-power").write_text(LOGGER)
    (tmp_path / "site-power").chmod(0o755)
    text = CLUSTER + host(1, 'power_command = "./site-power {action} {name}"\n') + host(2) + host(
        3, 'power_command = "site-power-nowhere {name}"\n')
    with pytest.raises(RecipeError) as caught:
        power(load_inventory(inventory(tmp_path, text)), ["server1", "server2", "server3"], "off")
    assert caught.value.lines == [
        f"{tmp_path}/cluster.toml: server2 has no bmc and no power_command (add bmc = "
        '"ipmi://ADDRESS", or a power_command to the host or [cluster])',
        f"{tmp_path}/cluster.toml: host[2].power_command: 'site-power-nowhere' is not a "
        "program here (not on PATH, or not an executable file)"]
    assert not (tmp_path / "argv.log").exists()
    with pytest.raises(InputError, match="'reboot' is not a power action"):
        power(load_inventory(tmp_path / "cluster.toml"), ["server1"], "reboot")


@pytest.mark.parametrize(("lines", "problem"), [
    (host(1, 'bmc = "redfish://10.1.2.5"\n'),
     "host[0].bmc: 'redfish://10.1.2.5' is not a BMC address like 'ipmi://10.1.2.5' or "
     "'ipmi://10.1.2.5:623' (IPMI over LAN)"),
    (host(1, 'bmc = "ipmi://10.1.2.300"\n'), "host[0].bmc: 'ipmi://10.1.2.300' is not a BMC "),
    (host(1, 'bmc = "ipmi://10.1.2.5:70000"\n'), "host[0].bmc: 70000 is not a port number"),
    (host(1, 'bmc = "ipmi://10.1.2.5"\nbmc_password_file = "pw"\n'),
     "host[0].bmc_user: missing (the BMC ipmi://10.1.2.5 needs it; or set it once in [cluster], "
     "or give the host a power_command)"),
    (host(1, 'bmc = "ipmi://10.1.2.5"\nbmc_user = "a-user-name-of-17b"\n'),
     "host[0].bmc_user: 'a-user-name-of-17b': an IPMI user name has 1 to 16 bytes"),
    (host(1, 'power_command = "ipmi-power -h {bmc}"\n'),
     "host[0].power_command: uses {bmc}, but host[0] has no bmc"),
    (host(1, 'power_command = "site-power {host}"\n'),
     "host[0].power_command: {host} is not one of {action}, {name}, {mac}, {ip}, {bmc}"),
    (host(1, 'power_command = "site-power {name!r}"\n'),
     "host[0].power_command: {name!r} is not one of"),
    (host(1, 'power_command = "site-power \'{name}"\n'),
     "host[0].power_command: \"site-power '{name}\" is not a command line (No closing "
     "quotation)"),
    (host(1, 'power_command = "  "\n'), "host[0].power_command: empty"),
    (host(1, 'power_command = 3\n'), "host[0].power_command: expected a string, got int"),
    ('power_command = "x {nam}"\n' + host(1),
     "cluster.power_command: {nam} is not one of"),
    (host(1, 'bmc = "ipmi://10.1.2.5"\npower_command = "x"\n')
     + host(2, 'bmc = "ipmi://10.1.2.5:623"\npower_command = "x"\n'),
     "host[1].bmc: ipmi://10.1.2.5 is also used by host[0]"),
    (host(1, 'bmcc = "ipmi://10.1.2.5"\n'), "host[0].bmcc: unknown key"),
])
def test_bad_power_keys(tmp_path: Path, lines: str, problem: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load_inventory(inventory(tmp_path, CLUSTER + lines))
    assert len(caught.value.lines) == 1, caught.value.lines
    assert caught.value.lines[0].startswith(f"{tmp_path}/cluster.toml: {problem}")


def test_a_bad_cluster_default_is_one_problem_for_all_hosts(tmp_path: Path) -> None:
    text = CLUSTER + 'bmc_user = ""\nbmc_password_file = "pw"\n' + "".join(
        host(n, f'bmc = "ipmi://10.1.2.{n}"\n') for n in (1, 2, 3))
    with pytest.raises(RecipeError) as caught:
        load_inventory(inventory(tmp_path, text))
    assert caught.value.lines == [f"{tmp_path}/cluster.toml: cluster.bmc_user: '': an IPMI "
                                  "user name has 1 to 16 bytes"]


def test_power_keys_resolve_host_over_cluster(tmp_path: Path) -> None:
    text = (CLUSTER + 'bmc_user = "admin"\nbmc_password_file = "secrets/bmc.pw"\n'
            + host(1, 'bmc = "ipmi://bmc1.example.com"\n')
            + host(2, 'bmc = "ipmi://10.1.2.6:6230"\nbmc_user = "ops"\n'
                      'bmc_password_file = "/etc/tcbuild/bmc2.pw"\n')
            + host(3))
    one, two, three = load_inventory(inventory(tmp_path, text)).hosts
    assert one.power and two.power and three.power is None
    assert (one.power.bmc and one.power.bmc.url, one.power.user, one.power.password_file) == (
        "ipmi://bmc1.example.com", "admin", tmp_path / "secrets/bmc.pw")
    assert one.power.keys["bmc_password_file"] == "cluster.bmc_password_file"
    assert (two.power.bmc and (two.power.bmc.host, two.power.bmc.port), two.power.user,
            two.power.password_file) == (("10.1.2.6", 6230), "ops",
                                         Path("/etc/tcbuild/bmc2.pw"))
    assert two.power.keys["bmc_password_file"] == "host[1].bmc_password_file"
