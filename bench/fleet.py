"""The operator's commands from 10 to 10,000 hosts, each timed as a whole process.

    python bench/fleet.py [--sizes 10,100,1000,10000] [--no-big] [--no-kea] [--work DIR]
                          [--out DIR] [--chart FILE] [--only server-config,publish,fleet]

For each size it writes an inventory (a /16, deterministic MACs and addresses, half the hosts in
a group with its own boot line, so half get per-MAC configs) and 30 days of logs per node in the
exact line format of the generated rsyslog rules (`<receive time> <source address> <tag>:
<message>`), rotated as logrotate leaves them (weekly, 4 kept, compress, delaycompress: node.log,
node.log.1, node.log.2.gz ... node.log.4.gz, and the same for node-err.log). Then it runs, each as
`python -m tcbuild ...` in a child process: `server-config` for each DHCP server kind and that
daemon's own check of the result (`dhcpd -t -cf`, `kea-dhcp4 -t`, `dnsmasq --test -C`),
`publish` into an empty tree and again (`--force`: every per-MAC config rewritten), `verify`,
`rollback`, `fleet` over the logs; `fleet --serve` and two `/metrics` scrapes when the command
exists; and once, `fleet` over 5,000 nodes of 200 lines each. The image is built once first
(from the tests' stand-in mirror on loopback), so `publish` finds it cached. Wall time and peak
RSS of each child (`os.wait4`).

As root, at the largest size of at least 1,000 hosts, Kea serves the generated config with its
reservations in a network namespace (two namespaces joined by a veth pair, made and deleted
here; nothing touches the host's network) while `perfdhcp -M` runs DORA exchanges for the
reserved MACs from the other one: leases per second.

`--only` times only some of the groups of
commands (`server-config` with the daemons' checks; `publish`: publish twice, verify and
rollback; `fleet` with its /metrics scrapes): the logs are made only for `fleet`.

It prints a markdown table, writes it to build/bench/fleet.md and draws docs/fleet-scale.svg
(plain SVG, written here). Generated inputs are kept under --work (default build/bench/fleet)
and reused by the next run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import measure  # noqa: E402  (bench/bench.py: a launcher between this and the child)
from tcbuild.boot.syslinux import PXE  # noqa: E402
from tcbuild.bootserver.dnsmasq import inlined  # noqa: E402
from tcbuild.fleet.boottest import stop  # noqa: E402
from tests.kit.mirrortree import MirrorServer, build_mirror  # noqa: E402

SIZES = (10, 100, 1000, 10000)
GROUPS = ("server-config", "publish", "fleet")  # --only's choices
BIG = (5000, 200)  # nodes, lines each
DAYS = 30
START = datetime(2026, 11, 1, tzinfo=UTC)  # the logs' first day
SUBNET = "10.20"  # a /16: 10.20.0.0/16, the boot server 10.20.0.1
LOGS_VERSION = "2"  # bump when the generated logs change: older ones are made again


@dataclass
class Row:
    hosts: int
    what: str
    seconds: float
    rss_mb: float | None
    note: str = ""

    @property
    def per_host(self) -> float:
        return self.seconds / self.hosts


# -- inputs ------------------------------------------------------------------------------------


def host_ip(i: int) -> str:
    """Host i (from 0): 10.20.1.1 onwards, 250 a /24 (.1 to .250)."""
    return f"{SUBNET}.{1 + i // 250}.{1 + i % 250}"


def host_mac(i: int) -> str:
    return f"52:54:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def host_name(i: int) -> str:
    return f"node{i + 1:05d}"


def inventory_text(n: int, log_dir: Path) -> str:
    lines = ["[cluster]", 'domain = "example.com"', f'boot_server = "{SUBNET}.0.1"',
             f'internal_subnet = "{SUBNET}.0.0/16"', f'internal_router = "{SUBNET}.0.1"',
             'external_network = "172.16.0.0/16"', 'external_gateway = "172.16.0.1"',
             'nfs_export = "/srv/gameserver"', 'nfs_mountpoint = "/mnt/gameserver"',
             'tftp_root = "/tftpboot"', 'game_log_tag = "master"', f'log_dir = "{log_dir}"', "",
             "[group.canary]",
             'append = "base norestore nodhcp cron console=tty0 console=ttyS0,115200 loglevel=7"',
             ""]
    for i in range(n):
        lines += ["[[host]]", f'name = "{host_name(i)}"', f'mac = "{host_mac(i)}"',
                  f'ip = "{host_ip(i)}"',
                  f'second_ip = "{host_ip(i).replace(SUBNET, "172.16", 1)}"',
                  *(['group = "canary"'] if i % 2 else []), ""]
    return "\n".join(lines)


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def node_days(i: int, ip: str, build: str) -> list[list[str]]:
    """Node i's lines, day by day: hourly chatter, a boot every 7 days (at day i % 7; one node
    in ten booted only on the first day), an error every other day."""
    days = []
    boots = {0} if i % 10 == 0 else set(range(i % 7, DAYS, 7))
    for day in range(DAYS):
        base = START + timedelta(days=day)
        out = []
        for hour in range(24):
            t = base + timedelta(hours=hour, seconds=i % 3600)
            if hour == 3 and day in boots:
                out += [f"{stamp(t)} {ip} kernel: Linux version 6.6.8-tinycore64",
                        f"{stamp(t + timedelta(seconds=20))} {ip} bootlocal: game-server node, "
                        f"build {build}, release unknown, kernel 6.6.8-tinycore64"]
            elif hour == 17 and day % 2 == i % 2:
                out.append(f"{stamp(t)} {ip} master[{1000 + i % 9000}]: ERROR player table "
                           f"full ({day} {hour})")
            else:
                out.append(f"{stamp(t)} {ip} nrpe[{700 + hour}]: connection from {SUBNET}.0.1")
        days.append(out)
    return days


def write_rotations(directory: Path, base: str, days: Sequence[Sequence[str]]) -> None:
    """Weekly, rotate 4, compress, delaycompress: the last two days live, then weeks back. Each
    file's mtime is the end of its last day, as rsyslog (and gzip, which keeps it) leave it."""
    cut = len(days) - 2
    parts = [(f"{base}", cut, len(days))]
    for k in range(1, 5):
        parts.append((f"{base}.{k}" + (".gz" if k > 1 else ""), max(0, cut - 7 * k),
                      cut - 7 * (k - 1)))
    for name, first, end in parts:
        text = "".join(line + "\n" for day in days[first:end] for line in day).encode()
        path = directory / name
        path.write_bytes(gzip.compress(text, 6, mtime=0) if name.endswith(".gz") else text)
        mtime = (START + timedelta(days=end)).timestamp()
        os.utime(path, (mtime, mtime))


def make_logs(logs: Path, n: int, build: str) -> None:
    done, version = logs / ".complete", f"{LOGS_VERSION} {build}"
    if done.exists() and done.read_text() == version:
        return
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    for i in range(n):
        ip, name = host_ip(i), host_name(i)
        days = node_days(i, ip, build[:12])
        write_rotations(logs, f"{name}.log", days)
        errors = [[line for line in day if " master[" in line] for day in days]
        write_rotations(logs, f"{name}-err.log", errors)
    done.write_text(version)


def make_big_logs(logs: Path, n: int, lines: int, build: str) -> None:
    """n nodes, one file of `lines` lines each: a boot near the start, errors now and then."""
    done = logs / ".complete"
    if done.exists() and done.read_text() == build:
        return
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    for i in range(n):
        ip, out, err = host_ip(i), [], []
        for k in range(lines):
            t = stamp(START + timedelta(minutes=10 * k, seconds=i % 600))
            if k == 5:
                out.append(f"{t} {ip} bootlocal: game-server node, build {build[:12]}, "
                           "release unknown, kernel 6.6.8-tinycore64")
            elif k % 50 == 7:
                out.append(f"{t} {ip} master[42]: ERROR something ({k})")
                err.append(out[-1])
            else:
                out.append(f"{t} {ip} nrpe[7]: connection from {SUBNET}.0.1")
        (logs / f"{host_name(i)}.log").write_text("".join(x + "\n" for x in out))
        (logs / f"{host_name(i)}-err.log").write_text("".join(x + "\n" for x in err))
    done.write_text(build)


def make_site(work: Path, mirror_url: str) -> Path:
    """The example recipe and overlay, fetching from the loopback mirror; stand-in
    bootloader files (publishing only copies them)."""
    site = work / "site"
    for name in ("recipes", "overlays", "examples"):
        shutil.rmtree(site / name, ignore_errors=True)
        shutil.copytree(ROOT / name, site / name)
    recipe = site / "recipes/gameserver.toml"
    text = re.sub(r"^mirrors = \[.*\]$", f'mirrors = ["{mirror_url}"]', recipe.read_text(),
                  flags=re.M)
    recipe.write_text(text)
    boot = site / "bootloader"
    boot.mkdir(exist_ok=True)
    for name in PXE:
        (boot / name).write_bytes(f"stand-in {name}\n".encode())
    return site


# -- timing ------------------------------------------------------------------------------------


def timed(argv: Sequence[str | Path]) -> tuple[float, float, str]:
    """Run argv to its end (through bench.py's launcher, so that this process's memory does not
    floor the child's): wall seconds, its peak RSS in MB, its output; a failure exits."""
    log = Path(tempfile.mkstemp(prefix="tcbuild-bench-")[1])
    try:
        try:
            sample = measure(f"cd {shlex.quote(str(ROOT))} && "
                             f"{shlex.join(map(str, argv))} >{shlex.quote(str(log))} 2>&1")
        except SystemExit:
            sys.exit(f"{shlex.join(map(str, argv))} failed:\n{log.read_text()[-3000:]}")
        return sample.wall, sample.rss_kib / 1024, log.read_text(errors="replace")
    finally:
        log.unlink()


def tcbuild(*args: str | Path) -> list[str | Path]:
    return [sys.executable, "-m", "tcbuild", *args]


def serves() -> bool:
    help_text = subprocess.run(tcbuild("fleet", "--help"), cwd=ROOT, capture_output=True,
                               text=True).stdout
    return "--serve" in help_text


def scrape_metrics(n: int, inventory: Path, logs: Path, tftp: Path) -> list[Row]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    server = subprocess.Popen(
        [str(a) for a in tcbuild("fleet", "--serve", f"127.0.0.1:{port}", "--inventory",
                                 inventory, "--logs", logs, "--tftp", tftp)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http"):
            sys.exit(f"fleet --serve printed {url!r} first, not its URL")
        ready = time.monotonic() - start
        rows = []
        for what in ("first", "second"):
            t0 = time.monotonic()
            with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=120) as reply:
                body = reply.read()
            if b"tcbuild_node" not in body:
                sys.exit("/metrics names no tcbuild_node metric")
            status = Path(f"/proc/{server.pid}/status").read_text()
            hwm = int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]
            rows.append(Row(n, f"fleet --serve: /metrics, {what} scrape",
                            time.monotonic() - t0, hwm,
                            f"server up in {ready:.2f} s" if what == "first" else ""))
        return rows
    finally:
        stop(server)


def bench_size(n: int, work: Path, site: Path, build: str, metrics: bool,
               only: Sequence[str] = GROUPS) -> list[Row]:
    here = work / str(n)
    logs = here / "logs"
    if "fleet" in only:
        make_logs(logs, n, build)
    here.mkdir(parents=True, exist_ok=True)
    inventory = here / "inventory.toml"
    inventory.write_text(inventory_text(n, logs))
    rows: list[Row] = []

    def row(what: str, argv: Sequence[str | Path], note: str = "") -> str:
        wall, rss, out = timed(argv)
        rows.append(Row(n, what, wall, rss, note))
        print(f"  {n:>6} {what:<42} {wall:7.2f} s {rss:6.0f} MB", flush=True)
        return out

    out = here / "server"
    shutil.rmtree(out, ignore_errors=True)
    daemons = (("isc", ["dhcpd", "-t", "-cf", out / "dhcpd.conf"]),
               ("kea", ["kea-dhcp4", "-t", out / "kea-dhcp4.conf"]),
               ("dnsmasq", ["dnsmasq", "--test", "-C", out / "dnsmasq-inlined.conf"]))
    for kind, check in daemons if "server-config" in only else ():
        row(f"server-config --dhcp {kind}",
            tcbuild("server-config", inventory, "--out", out, "--dhcp", kind))
        if kind == "dnsmasq":  # its check does not read the per-host files: inline them
            (out / "dnsmasq-inlined.conf").write_text(inlined(*(
                (out / f"dnsmasq{part}").read_text() for part in (".conf", "-hosts", "-opts"))))
        if shutil.which(check[0]):
            row(f"{check[0]} check ({kind})", check)
        else:
            print(f"  {check[0]} is not installed: its check is left out")
    tftp = here / "tftp"
    if "publish" in only:
        shutil.rmtree(tftp, ignore_errors=True)
        tftp.mkdir()
        recipe = site / "recipes/gameserver.toml"
        common = ["--tftp", tftp, "--cache", work / "cache", "--offline", "--quiet",
                  "--bootloader-dir", site / "bootloader", "--out", work / "build",
                  "--inventory", inventory]
        row("publish (empty tree)", tcbuild("publish", recipe, *common))
        row("publish again (--force)", tcbuild("publish", recipe, *common, "--force"))
        row("verify", tcbuild("verify", "--tftp", tftp, "--inventory", inventory))
        row("rollback", tcbuild("rollback", "--tftp", tftp))
    if "fleet" not in only:
        return rows
    fleet = row(f"fleet ({DAYS} days of logs)",
                tcbuild("fleet", "--inventory", inventory, "--logs", logs, "--tftp", tftp,
                        "--leases", here / "no.leases"))
    if fleet.count("\n") < n:
        sys.exit(f"fleet printed {fleet.count(chr(10))} lines for {n} hosts")
    if metrics:
        for r in scrape_metrics(n, inventory, logs, tftp):
            rows.append(r)
            print(f"  {n:>6} {r.what:<42} {r.seconds:7.2f} s {r.rss_mb:6.0f} MB", flush=True)
    return rows


def bench_big(work: Path, build: str) -> Row:
    n, lines = BIG
    here = work / f"big-{n}x{lines}"
    logs = here / "logs"
    make_big_logs(logs, n, lines, build)
    inventory = here / "inventory.toml"
    inventory.write_text(inventory_text(n, logs))
    wall, rss, _ = timed(tcbuild("fleet", "--inventory", inventory, "--logs", logs,
                                 "--leases", here / "no.leases"))
    what = f"fleet ({lines} lines a node)"
    print(f"  {n:>6} {what:<42} {wall:7.2f} s {rss:6.0f} MB", flush=True)
    return Row(n, what, wall, rss)


# -- Kea under perfdhcp ------------------------------------------------------------------------


def kea_rate(n: int, work: Path) -> Row | None:
    """Kea with the size's generated config in one namespace, perfdhcp -M over the reserved
    MACs in another: DORA exchanges a second."""
    from tests.kit.dhcplab import start_kea
    from tests.kit.netns import Lab

    if os.geteuid() != 0 or not shutil.which("perfdhcp") or not shutil.which("kea-dhcp4"):
        print("  Kea under perfdhcp left out (needs root, kea-dhcp4 and perfdhcp)")
        return None

    class ScaleLab(Lab):
        def namespace(self, role: str) -> str:  # this bench's own names
            name = f"scf{os.getpid()}{role}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            self.namespaces.append(name)
            self.ip(name, "link", "set", "lo", "up")
            return name

    here = work / str(n)
    macs = here / "macs.txt"
    macs.write_text("".join(host_mac(i) + "\n" for i in range(n)))
    kea_dir = here / "kea-live"
    shutil.rmtree(kea_dir, ignore_errors=True)
    kea_dir.mkdir()
    with ScaleLab(kea_dir) as lab:
        server, client = lab.namespace("s"), lab.namespace("c")
        lab.link(server, "scfk0", client, "scfp0")
        lab.ip(server, "addr", "add", f"{SUBNET}.0.1/16", "dev", "scfk0")
        lab.ip(client, "addr", "add", f"{SUBNET}.255.250/16", "dev", "scfp0")
        kea = start_kea(lab, server, "kea", (here / "server/kea-dhcp4.conf").read_text(),
                        kea_dir / "kea")
        kea.wait_for_output("DHCP4_STARTED")
        period = 10
        result = subprocess.run(
            ["ip", "netns", "exec", client, "perfdhcp", "-4", "-l", "scfp0", "-r", "3000",
             "-R", str(n), "-M", str(macs), "-p", str(period), "-W", "1000000"],
            capture_output=True, text=True, timeout=period + 60)
    text = result.stdout + result.stderr
    (work / "perfdhcp.txt").write_text(text)
    found = re.search(r"^rate: ([\d.]+) 4-way exchanges/second", text, re.M | re.I)
    if result.returncode not in (0, 3) or found is None:
        sys.exit(f"perfdhcp exited {result.returncode}:\n{text[-3000:]}")
    sent = re.search(r"sent packets: (\d+)", text)
    drops = re.search(r"drops: (\d+)", text)
    note = (f"{float(found[1]):,.0f} leases/s over {n:,} reserved MACs "
            f"(asked 3,000/s for {period} s; {sent[1] if sent else '?'} DISCOVERs sent, "
            f"{drops[1] if drops else '?'} dropped)")
    print(f"  {n:>6} Kea under perfdhcp: {note}")
    return Row(n, "kea: DORA exchanges/s (perfdhcp -M)", float(found[1]), None, note)


# -- report ------------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    lines = ["| hosts | command | seconds | ms per host | peak RSS MB |",
             "|---:|---|---:|---:|---:|"]
    for r in rows:
        if r.rss_mb is None:  # the Kea rate: a rate, not a time
            lines.append(f"| {r.hosts:,} | {r.what} | {r.note} | | |")
            continue
        note = f" ({r.note})" if r.note else ""
        lines.append(f"| {r.hosts:,} | {r.what}{note} | {r.seconds:.2f} | "
                     f"{1000 * r.per_host:.3f} | {r.rss_mb:.0f} |")
    return "\n".join(lines) + "\n"


COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39")


def chart(rows: Sequence[Row], sizes: Sequence[int]) -> str:
    """Seconds against hosts, both on log scales, one line per command (plain SVG)."""
    import math

    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.rss_mb is not None and r.hosts in sizes and "lines a node" not in r.what:
            series.setdefault(r.what, []).append((r.hosts, max(r.seconds, 0.01)))
    w, h, left, right, top, bottom = 900, 520, 70, 300, 30, 50
    lo_x, hi_x = math.log10(min(sizes)), math.log10(max(sizes))
    hi_x = hi_x if hi_x > lo_x else lo_x + 1
    lo_y, hi_y = -2.0, 2.0  # 0.01 s to 100 s

    def x(v: float) -> float:
        return left + (math.log10(v) - lo_x) / (hi_x - lo_x) * (w - left - right)

    def y(v: float) -> float:
        return top + (hi_y - math.log10(v)) / (hi_y - lo_y) * (h - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">tcbuild commands: whole-process seconds '
           'against hosts (log scales)</text>']
    for e in range(int(lo_y), int(hi_y) + 1):
        v = 10.0 ** e
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{w - right}" y2="{y(v):.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g} s</text>')
    out.append(f'<line x1="{left}" y1="{y(10):.1f}" x2="{w - right}" y2="{y(10):.1f}" '
               'stroke="#d62728" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{w - right - 4}" y="{y(10) - 4:.1f}" text-anchor="end" '
               'fill="#d62728">target: 10 s</text>')
    for size in sizes:
        out.append(f'<line x1="{x(size):.1f}" y1="{top}" x2="{x(size):.1f}" y2="{h - bottom}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x(size):.1f}" y="{h - bottom + 18}" text-anchor="middle">'
                   f'{size:,}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 10}" text-anchor="middle">hosts'
               '</text>')
    for k, (what, points) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3" fill="{color}"/>'
                for a, b in points]
        ly = top + 10 + 18 * k
        out.append(f'<line x1="{w - right + 15}" y1="{ly}" x2="{w - right + 35}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="2"/>')
        label = what.replace("&", "&amp;").replace("<", "&lt;")
        out.append(f'<text x="{w - right + 40}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="host counts (default 10,100,1000,10000)")
    parser.add_argument("--no-big", action="store_true",
                        help=f"leave out fleet over {BIG[0]:,} nodes x {BIG[1]} lines")
    parser.add_argument("--no-kea", action="store_true", help="leave out Kea under perfdhcp")
    parser.add_argument("--work", type=Path, default=ROOT / "build/bench/fleet")
    parser.add_argument("--out", type=Path, default=ROOT / "build/bench")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs/fleet-scale.svg")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help="the groups of commands timed (default: all of "
                             f"{','.join(GROUPS)})")
    args = parser.parse_args(argv)
    only = [g for g in args.only.split(",") if g]
    if not only or any(g not in GROUPS for g in only):
        parser.error(f"--only: a comma-separated list of {', '.join(GROUPS)}")
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    if not sizes or sizes[0] < 1 or sizes[-1] > 60000:
        parser.error("--sizes: host counts from 1 to 60,000")
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    mirror_root = work / "mirror"
    if not (mirror_root / ".complete").exists():
        shutil.rmtree(mirror_root, ignore_errors=True)
        build_mirror(mirror_root)
        (mirror_root / ".complete").touch()
    metrics = "fleet" in only and serves()
    if "fleet" in only and not metrics:
        print("note: this tree's `tcbuild fleet` has no --serve: the /metrics rows are left out")
    rows: list[Row] = []
    with MirrorServer(mirror_root) as mirror:
        site = make_site(work, mirror.url)
        _, _, out = timed(tcbuild("build", site / "recipes/gameserver.toml", "--cache",
                                  work / "cache", "--out", work / "build", "--quiet"))
    build = json.loads((work / "build/build.json").read_text())["build_id"]
    print(f"image built once ({build[:12]}); timing:", flush=True)
    for n in sizes:
        rows += bench_size(n, work, site, build, metrics, only)
    if not args.no_big and "fleet" in only:
        rows.append(bench_big(work, build))
    kea_wanted = not args.no_kea and "server-config" in only and sizes[-1] >= 1000
    if kea_wanted and (kea := kea_rate(sizes[-1], work)):
        rows.append(kea)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    text = (f"tcbuild fleet scale, {now}, {os.cpu_count()} cores, load average {load:.2f}\n\n"
            + table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.md").write_text(text)
    args.chart.parent.mkdir(parents=True, exist_ok=True)
    args.chart.write_text(chart(rows, sizes))
    print()
    print(text, end="")
    print(f"\nwritten: {args.out / 'fleet.md'}, {args.chart}")


if __name__ == "__main__":
    main()
