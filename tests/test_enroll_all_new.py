"""`tcbuild enroll --all-new`: every machine `fleet` lists as new, enrolled in one inventory write.

Recorded files stand in for the boot server: the reports the log host filed under `unknown/`
and Kea's lease file. A machine counts only when a lease bears its report out, as for `fleet`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from tcbuild.config.allocate import Request
from tcbuild.stages.enroll import enroll_many, enroll_new

from .test_discovery_fleet import KEA_HEADER, T0, report_line
from .test_fleet import EXAMPLE, ROOT

MAC_A, MAC_B, MAC_C = "52:54:00:d2:3d:01", "52:54:00:d2:3d:11", "52:54:00:d2:3d:21"
EXPIRE = int((T0 + timedelta(minutes=4)).timestamp())  # a 300 s lease from T0 - 1 min


def site(tmp_path: Path, discovery: bool = True) -> tuple[Path, Path, Path]:
    """An inventory (with a discovery range), the log host's `unknown/` files with three
    reports (C's unborne by any lease) and Kea's lease file."""
    inventory = tmp_path / "cluster.toml"
    extra = 'discovery = "10.1.1.200-10.1.1.250"\n' if discovery else ""
    inventory.write_text(EXAMPLE.read_text().replace("[cluster]\n", f"[cluster]\n{extra}", 1))
    logs = tmp_path / "remote"
    (logs / "unknown").mkdir(parents=True)
    (logs / "unknown/2026-12-07.log").write_text(
        report_line(T0, "10.1.1.211", MAC_B) + report_line(T0, "10.1.1.210", MAC_A)
        + report_line(T0, "10.1.1.212", MAC_C))
    leases = tmp_path / "kea-leases4.csv"
    leases.write_text(KEA_HEADER + "".join(
        f"{address},{mac},,300,{EXPIRE},1,0,0,,0,,0\n"
        for address, mac in (("10.1.1.210", MAC_A), ("10.1.1.211", MAC_B))))
    return inventory, logs, leases


def tcbuild(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_new_machine_is_enrolled_in_one_write(tmp_path: Path) -> None:
    inventory, logs, leases = site(tmp_path)
    before = inventory.read_text()
    args = ("--inventory", inventory, "--logs", logs, "--leases", leases)
    shown = json.loads(tcbuild("fleet", *args, "--json").stdout)
    assert [m["mac"] for m in shown["new"]] == [MAC_A, MAC_B]  # C: no lease bears it out

    done = tcbuild("enroll", "--all-new", *args)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == (
        f"{inventory}: enrolled server3 ({MAC_A}, 10.1.1.7, 172.16.1.7)\n"
        f"{inventory}: enrolled server4 ({MAC_B}, 10.1.1.8, 172.16.1.8)\n")
    # The same text as one enroll_many of both: the file as it was, and two tables at its end.
    expected = tmp_path / "expected.toml"
    expected.write_text(before)
    enroll_many(expected, [Request(MAC_A), Request(MAC_B)])
    after = inventory.read_text()
    assert after == expected.read_text()
    assert after.startswith(before) and after.count("[[host]]") == before.count("[[host]]") + 2

    # Enrolled, they are new no more; a second run finds none and writes nothing.
    assert json.loads(tcbuild("fleet", *args, "--json").stdout)["new"] == []
    again = tcbuild("enroll", "--all-new", *args)
    assert (again.returncode, again.stdout, again.stderr) == (
        0, f"{inventory}: no new machine to enroll\n", "")
    assert inventory.read_text() == after


def test_a_group_for_all_and_json(tmp_path: Path) -> None:
    inventory, logs, leases = site(tmp_path)
    done = tcbuild("enroll", "--all-new", "--inventory", inventory, "--logs", logs,
                   "--leases", leases, "--group", "canary", "--json")
    assert done.returncode == 0, done.stderr
    hosts = json.loads(done.stdout)["hosts"]
    assert [(h["name"], h["mac"], h["group"]) for h in hosts] == [
        ("server3", MAC_A, "canary"), ("server4", MAC_B, "canary")]


def test_none_new_writes_nothing(tmp_path: Path) -> None:
    inventory, logs, leases = site(tmp_path, discovery=False)  # no range: nobody is new
    before = inventory.read_bytes()
    changed = enroll_new(inventory, logs=logs, leases=[leases])
    assert changed.hosts == () and inventory.read_bytes() == before
    done = tcbuild("enroll", "--all-new", "--inventory", inventory, "--logs", logs,
                   "--leases", leases, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hosts"] == []
    (tmp_path / "empty").mkdir()
    inventory, logs, leases = site(tmp_path / "empty")
    leases.write_text(KEA_HEADER)  # reports, but no lease bears them out
    done = tcbuild("enroll", "--all-new", "--inventory", inventory, "--logs", logs,
                   "--leases", leases)
    assert (done.returncode, done.stdout) == (0, f"{inventory}: no new machine to enroll\n")
