"""Discovered machines: the image's report, the DHCP server's lease records, `fleet` listing new.

The report builder (overlays/.../usr/local/sbin/tcbuild-discover) runs for real under busybox sh
on a made-up /sys and /proc; its line parses back to what it read. Lease files in both formats
(dhcpd's, Kea's memfile) parse, hostile ones are skipped line by line, and reads are bounded.
`fleet` lists a machine as new only when a lease record shows one of its reported MACs holding
the address its line came from, at that time, in the discovery range.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcbuild.config.discovery import REPORT_TAG, parse_range
from tcbuild.fleet import leases
from tcbuild.fleet.discover import discovered, machines, parse_report, unknown_lines
from tcbuild.fleet.view import parse_line

from .kit.dhcplab import render_image_files
from .kit.requires import require_tool
from .test_fleet import EXAMPLE, ROOT, syslog
from .test_fleet_trust import FUZZ, hostile_lines

SCRIPT = ROOT / "overlays/gameserver/usr/local/sbin/tcbuild-discover"
T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
MAC1, MAC2 = "52:54:00:d2:3d:01", "52:54:00:d2:3d:02"
RANGE, _ = parse_range("10.1.1.200-10.1.1.250", None, [])
assert RANGE is not None


def fake_machine(root: Path, disks: bool = True) -> tuple[Path, Path]:
    sys_, proc = root / "sys", root / "proc"
    files = {
        "proc/cpuinfo": "processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\n\n"
                        "processor\t: 1\nmodel name\t: QEMU Virtual CPU version 2.5+\n",
        "proc/meminfo": "MemTotal:        2030000 kB\nMemFree:          100 kB\n",
        "sys/class/dmi/id/sys_vendor": "QEMU\n",
        "sys/class/dmi/id/product_name": 'Standard PC (i440FX + "PIIX", 1996)\n',
        "sys/class/dmi/id/product_serial": "back\\slash\ttab\x01\n",
        "sys/class/net/lo/address": "00:00:00:00:00:00\n",
        "sys/class/net/eth0/address": f"{MAC2}\n",
        "sys/class/net/eth0/operstate": "down\n",
        "sys/class/net/eth1/address": f"{MAC1}\n",
        "sys/class/net/eth1/operstate": "up\n",
        "sys/block/loop0/size": "2048\n",
    }
    if disks:
        files |= {"sys/block/sda/size": "20971520\n", "sys/block/sr0/size": "100\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return sys_, proc


def report_of(root: Path, build: str = "0123456789ab") -> str:
    require_tool("busybox", "busybox-static")
    sys_, proc = fake_machine(root)
    env = {"PATH": "/nonexistent", "TCBUILD_DISCOVER_SYS": str(sys_),
           "TCBUILD_DISCOVER_PROC": str(proc)}
    bin_dir = root / "bin"  # busybox's applets only, as on Tiny Core
    bin_dir.mkdir()
    for applet in ("head", "sed", "tr", "grep"):
        (bin_dir / applet).symlink_to(shutil.which("busybox") or "busybox")
    env["PATH"] = str(bin_dir)
    done = subprocess.run([shutil.which("busybox") or "busybox", "sh", str(SCRIPT), build],
                          env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


def test_the_report_builder_says_everything_in_one_line(tmp_path: Path) -> None:
    out = report_of(tmp_path)
    assert out.count("\n") == 1
    assert out == ('build=0123456789ab cpus=2 cpu="QEMU Virtual CPU version 2.5+" mem_kb=2030000 '
                   'vendor=QEMU product="Standard PC (i440FX + \\"PIIX\\", 1996)" '
                   'serial="back\\\\slash tab?" '
                   f"nic=eth0,{MAC2},down nic=eth1,{MAC1},up disk=sda,10737418240\n")
    report = parse_report(f"{REPORT_TAG}: {out.strip()}")
    assert report is not None
    assert report.values["product"] == 'Standard PC (i440FX + "PIIX", 1996)'
    assert report.values["serial"] == "back\\slash tab?"
    assert [(n.name, n.mac, n.state) for n in report.nics] == [("eth0", MAC2, "down"),
                                                               ("eth1", MAC1, "up")]
    assert report.disks == (("sda", 10737418240),)


def test_bootlocal_reports_and_waits_before_the_share(tmp_path: Path) -> None:
    require_tool("busybox", "busybox-static")
    script = render_image_files(tmp_path)["/opt/bootlocal.sh"]
    text = script.read_text()
    assert subprocess.run(["busybox", "sh", "-n", str(script)]).returncode == 0
    block = text.index('*" tcbuild.discover "*)')
    assert text.index("wait_for_network") < block < text.index("if ! mount_share; then")
    assert "/usr/local/sbin/tcbuild-discover \"$BUILD\"" in text[block:]
    assert "logger -t tcbuild-discover" in text[block:]
    assert oct((SCRIPT.stat().st_mode) & 0o111) != "0o0"  # the overlay keeps it executable


# -- lease files --------------------------------------------------------------------------------

DHCPD = f"""# The format of this file is documented in the dhcpd.leases(5) manual page.
authoring-byte-order little-endian;

lease 10.1.1.200 {{
  starts 1 2026/12/07 09:59:00;
  ends 1 2026/12/07 10:04:00;
  binding state active;
  hardware ethernet {MAC1.upper()};
}}
lease 10.1.1.201 {{
  starts epoch 1796637600;
  ends epoch 1796637900;
  hardware ethernet {MAC2};
}}
lease 10.1.1.202 {{
  starts 1 2026/13/07 09:59:00;
  ends 1 2026/12/07 10:04:00;
  hardware ethernet {MAC2};
}}
lease 10.1.1.203 {{
  starts 1 2026/12/07 09:59:00;
  ends never;
  hardware ethernet zz:54:00:d2:3d:02;
}}
lease 10.1.1.999 {{
  starts 1 2026/12/07 09:59:00;
  ends 1 2026/12/07 10:04:00;
  hardware ethernet {MAC2};
}}
lease 10.1.1.204 {{
  starts 1 2026/12/07 09:59:00;
"""
KEA_HEADER = ("address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,"
              "hostname,state,user_context,pool_id\n")
EXPIRE = int((T0 + timedelta(minutes=4)).timestamp())
KEA = KEA_HEADER + f"""10.1.1.210,{MAC1},,300,{EXPIRE},1,0,0,,0,,0
10.1.1.211,{MAC2},,300,99999999999999999999,1,0,0,,0,,0
10.1.1.212,not-a-mac,,300,1796637900,1,0,0,,0,,0
10.1.1.213,{MAC2},,x,1796637900,1,0,0,,0,,0
"short,row
"""


def test_dhcpd_and_kea_lease_files_parse_and_bad_records_are_skipped() -> None:
    dhcpd = leases.parse(DHCPD)
    assert [(str(r.address), r.mac, r.start, r.end) for r in dhcpd] == [
        ("10.1.1.200", MAC1, T0 - timedelta(minutes=1), T0 + timedelta(minutes=4)),
        ("10.1.1.201", MAC2, datetime.fromtimestamp(1796637600, UTC),
         datetime.fromtimestamp(1796637900, UTC))]
    kea = leases.parse(KEA)
    assert [(str(r.address), r.mac, r.start, r.end) for r in kea] == [
        ("10.1.1.210", MAC1, T0 - timedelta(minutes=1), T0 + timedelta(minutes=4))]


DNSMASQ = f"""{EXPIRE} {MAC1} 10.1.1.220 * 01:{MAC1}
0 {MAC2} 10.1.1.221 server2 *
{EXPIRE} not-a-mac 10.1.1.222 * *
99999999999999 {MAC2} 10.1.1.223 * *
duid 00:01:00:01:2c:1f:6d:2a:52:54:00:d2:3d:01
"""


def test_dnsmasq_lease_files_parse_each_record_from_a_day_before_its_end() -> None:
    """dnsmasq keeps only the leases held now, with their ends: a record bears out a report
    from the day before its end (a waiting machine reports every 10 minutes)."""
    found = leases.parse(DNSMASQ)
    end = datetime.fromtimestamp(EXPIRE, UTC)
    assert [(str(r.address), r.mac, r.start, r.end) for r in found] == [
        ("10.1.1.220", MAC1, end - leases.DNSMASQ_WINDOW, end),
        ("10.1.1.221", MAC2, datetime.fromtimestamp(0, UTC), leases.FOREVER)]
    lease = found[0]
    assert lease.held(IPv4Address("10.1.1.220"), MAC1, T0 - timedelta(hours=23))
    assert not lease.held(IPv4Address("10.1.1.220"), MAC1, T0 - timedelta(days=2))
    assert not lease.held(IPv4Address("10.1.1.220"), MAC2, T0)
    assert leases.parse(DHCPD) and all(r.address != IPv4Address("10.1.1.220")
                                       for r in leases.parse(DHCPD))  # told apart


def test_reads_are_bounded_to_the_newest_records(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "LIMIT", len(DHCPD) - DHCPD.index("lease 10.1.1.201") + 3)
    dhcpd, kea = tmp_path / "dhcpd.leases", tmp_path / "kea-leases4.csv"
    dhcpd.write_text("# padding\n" * 200 + DHCPD)
    header, *rows = KEA.splitlines(keepends=True)
    kea.write_text(header + rows[0] * 50 + "".join(rows))
    found = leases.read_leases([dhcpd, kea, tmp_path / "missing"])
    assert {str(r.address) for r in found} == {"10.1.1.201", "10.1.1.210"}  # .200: cut off


@FUZZ
@given(st.binary(max_size=600))
def test_any_lease_file_parses_or_is_skipped(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    for prefix in ("", "address,hwaddr,valid_lifetime,expire\n", "lease 10.1.1.200 {\n",
                   f"1796637900 {MAC1} 10.1.1.220 * *\n"):
        for record in leases.parse(prefix + text):
            assert record.start <= record.end


# -- report lines -------------------------------------------------------------------------------


def report_line(when: datetime, source: str, *macs: str, build: str = "0123456789ab") -> str:
    nics = " ".join(f"nic=eth{i},{mac},up" for i, mac in enumerate(macs))
    return syslog(when, source, REPORT_TAG, f'build={build} cpus=2 cpu="QEMU CPU" {nics}')


def test_the_hostile_corpus_reports_nothing() -> None:
    for raw in hostile_lines():
        text = raw.decode("utf-8", errors="replace")
        line = parse_line(text)
        assert parse_report(line.text if line else text) is None, text
        assert parse_report(f"{REPORT_TAG}: {text}") is None or "nic=" in text


@FUZZ
@given(st.text(max_size=300))
def test_any_report_text_parses_or_is_skipped(text: str) -> None:
    report = parse_report(f"{REPORT_TAG}: {text}")
    if report is not None:
        assert report.nics and "build" in report.values and "\n" not in text


def test_only_reports_the_leases_bear_out_are_new() -> None:
    records = leases.parse(KEA) + leases.parse(DHCPD.replace("10.1.1.201", "10.1.1.221"))
    lines = [
        report_line(T0, "10.1.1.210", MAC2, MAC1),  # Kea: MAC1 holds .210 now: new
        report_line(T0 + timedelta(minutes=2), "10.1.1.210", MAC1, build="ffffffffffff"),
        report_line(T0, "10.1.1.200", "52:54:00:d2:3d:99"),  # .200 is MAC1's, not this MAC's
        report_line(T0, "10.1.1.205", MAC1),  # no lease for that address at all
        report_line(T0 + timedelta(hours=1), "10.1.1.210", MAC1),  # after the lease ended
        syslog(T0, "10.1.1.210", "bootlocal", f"build=1 nic=eth0,{MAC1},up"),  # another tag
        report_line(T0, "10.1.1.5", MAC1),  # a host's address, outside the range
    ]
    parsed = [line for text in lines if (line := parse_line(text.strip())) is not None]
    found = machines(parsed, records, RANGE, known=set())
    assert [(m.mac, m.address, m.first_seen, m.last_seen, m.report.values["build"])
            for m in found] == [(MAC1, "10.1.1.210", T0, T0 + timedelta(minutes=2),
                                 "ffffffffffff")]
    assert machines(parsed, records, RANGE, known={MAC1}) == []  # enrolled since: not new


def test_fleet_lists_new_machines(tmp_path: Path) -> None:
    inventory = tmp_path / "cluster.toml"
    inventory.write_text(EXAMPLE.read_text().replace(
        "tftp_root ", 'discovery = "10.1.1.200-10.1.1.250"\ntftp_root ', 1))
    logs = tmp_path / "remote"
    (logs / "unknown").mkdir(parents=True)
    (logs / "unknown/2026-12-07.log").write_text(
        report_line(T0, "10.1.1.210", MAC1) + report_line(T0, "10.1.1.211", MAC2)
        + "garbage\n")
    (tmp_path / "kea.csv").write_text(KEA)
    assert [line.source for line in unknown_lines(logs)] == [IPv4Address("10.1.1.210"),
                                                             IPv4Address("10.1.1.211")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["fleet", "--inventory", inventory, "--logs", logs, "--leases", tmp_path / "kea.csv"]
    done = subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"{MAC1}  new  10.1.1.210  first seen 2026-12-07T10:00:00Z  last seen "
        f"2026-12-07T10:00:00Z  2 cpu QEMU CPU; eth0 {MAC1} up; no disk; build 0123456789ab")
    done = subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args), "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    shown = json.loads(done.stdout)
    assert [e["state"] for e in shown["hosts"]] == ["never seen", "never seen"]
    assert shown["new"] == [{
        "name": None, "ip": "10.1.1.210", "state": "new", "mac": MAC1,
        "first_seen": "2026-12-07T10:00:00Z", "last_seen": "2026-12-07T10:00:00Z",
        "hardware": {"build": "0123456789ab", "cpus": "2", "cpu": "QEMU CPU",
                     "nics": [{"name": "eth0", "mac": MAC1, "state": "up"}], "disks": []}}]


def test_only_the_days_the_leases_cover_are_read(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Months of unknown/ files: a day before the oldest lease (less a day's margin) is not
    opened (a damaged one would warn); without a lease in the range nothing is read."""
    inventory = tmp_path / "cluster.toml"
    inventory.write_text(EXAMPLE.read_text().replace(
        "tftp_root ", 'discovery = "10.1.1.200-10.1.1.250"\ntftp_root ', 1))
    logs = tmp_path / "remote"
    (logs / "unknown").mkdir(parents=True)
    (logs / "unknown/2026-12-07.log").write_text(report_line(T0, "10.1.1.210", MAC1))
    for day in ("2026-11-01", "2026-12-05"):  # long before the lease; two days before
        (logs / f"unknown/{day}.log.1.gz").write_bytes(b"not gzip: reading it warns\n")
    (tmp_path / "kea.csv").write_text(KEA)
    found = discovered(inventory, logs, [tmp_path / "kea.csv"])
    assert [m.mac for m in found] == [MAC1]
    assert not [r for r in caplog.records if "unreadable" in r.getMessage()]
    (logs / "unknown/2026-12-06.log.1.gz").write_bytes(b"not gzip: reading it warns\n")
    assert [m.mac for m in discovered(inventory, logs, [tmp_path / "kea.csv"])] == [MAC1]
    assert [r for r in caplog.records if "2026-12-06.log.1.gz: unreadable" in r.getMessage()]
    caplog.clear()
    (tmp_path / "none.csv").write_text(KEA.splitlines()[0] + "\n")  # no lease: nothing read
    assert discovered(inventory, logs, [tmp_path / "none.csv"]) == []
    assert not [r for r in caplog.records if "unreadable" in r.getMessage()]
