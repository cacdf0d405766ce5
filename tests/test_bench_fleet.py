"""bench/fleet.py at its smallest size: every row of the table is there (not a timed test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .kit.requires import require_tool

ROOT = Path(__file__).resolve().parent.parent
ROWS = ["server-config --dhcp isc", "dhcpd check (isc)", "server-config --dhcp kea",
        "kea-dhcp4 check (kea)", "server-config --dhcp dnsmasq", "dnsmasq check (dnsmasq)",
        "publish (empty tree)", "publish again (--force)", "verify", "rollback",
        "fleet (30 days of logs)"]


def test_the_bench_at_ten_hosts_has_every_row(tmp_path: Path) -> None:
    require_tool("mksquashfs", "squashfs-tools")
    require_tool("bsdtar", "libarchive-tools")
    for tool, package in (("dhcpd", "isc-dhcp-server"), ("kea-dhcp4", "kea-dhcp4-server"),
                          ("dnsmasq", "dnsmasq-base")):
        require_tool(tool, package)
    chart = tmp_path / "chart.svg"
    done = subprocess.run([sys.executable, ROOT / "bench/fleet.py", "--sizes", "10", "--no-big",
                           "--no-kea", "--work", tmp_path / "work", "--out", tmp_path,
                           "--chart", chart], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    table = (tmp_path / "fleet.md").read_text()
    rows = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| 10 |")]
    metrics = [r for r in rows if r.startswith("fleet --serve")]
    assert [r for r in rows if r not in metrics] == ROWS
    if "--serve" in subprocess.run([sys.executable, "-m", "tcbuild", "fleet", "--help"],
                                   cwd=ROOT, capture_output=True, text=True).stdout:
        assert len(metrics) == 2, rows
    else:
        assert "the /metrics rows are left out" in done.stdout
    for line in table.splitlines():
        if line.startswith("| 10 |"):  # seconds, ms per host, peak RSS: numbers, RSS > 0
            seconds, per_host, rss = (float(c) for c in line.strip("| ").split(" | ")[2:5])
            assert abs(per_host - 100 * seconds) < 1 and rss > 0, line
    assert table in done.stdout  # printed too
    svg = chart.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == len(rows)  # a line per row
