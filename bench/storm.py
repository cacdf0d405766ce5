"""The boot storm, server side: N clients at once fetch the kernel and the initrd of one release
from in.tftpd (blksize 1468, as firmware asks) and from nginx serving the same tree.

    python bench/storm.py [--clients 1,10,50] [--cap SECONDS] [--work DIR]

As root. It lays out a release like `tcbuild publish` does (tcbuild/releases/<id>/vmlinuz64, the
cached Debian kernel of the tests, and core.hts.gz, incompressible bytes up to 20 MB in all),
creates two network namespaces joined by a veth pair (tests/kit/netns.py's Lab: nothing touches the
host's network), starts in.tftpd (as Debian's init script does, --secure) and nginx (Debian's
nginx-light, a minimal generated nginx.conf) in the server's, and runs N curl processes in the
client's, each fetching the kernel then the initrd: tftp:// with --tftp-blksize 1468, or http://.
For each N and server it measures the wall time until every client is done, the MB/s of all of
them together, and the server's CPU time (user + system from /proc/<pid>/stat of the daemon and
its children, reaped or alive). Every client's byte count is checked. It prints a markdown table,
writes it to build/bench/storm.md and draws docs/boot-storm.svg (matplotlib: `pip install
-e .[bench]`). Every process is stopped by its pid; the namespaces and the
work directory are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.kit.bootkit import DEFAULT_KERNEL_CACHE, debian_kernel  # noqa: E402
from tests.kit.netns import Daemon, Lab, wait_for  # noqa: E402

TOTAL = 20_000_000  # bytes of kernel + initrd, like the bench image
RELEASE = "tcbuild/releases/20261130T000000Z-000000000000"
FILES = ("vmlinuz64", "core.hts.gz")
SERVER, CLIENT = "10.77.0.1", "10.77.0.2"
BLKSIZE = 1468
CHART = ROOT / "docs" / "boot-storm.svg"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    server: str
    clients: int
    wall: float
    cpu: float
    size: int

    @property
    def mbps(self) -> float:
        return self.clients * self.size / self.wall / 1e6


def make_tree(tree: Path) -> int:
    """The release: the tests' Debian kernel and an incompressible initrd; returns its bytes."""
    release = tree / RELEASE
    release.mkdir(parents=True, exist_ok=True)
    kernel = debian_kernel(DEFAULT_KERNEL_CACHE).vmlinuz.read_bytes()
    (release / FILES[0]).write_bytes(kernel)
    (release / FILES[1]).write_bytes(random.Random(12).randbytes(TOTAL - len(kernel)))
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by tftpd's and nginx's users
    return sum((release / name).stat().st_size for name in FILES)


def nginx_conf(work: Path, tree: Path) -> Path:
    conf = work / "nginx.conf"
    temp = work / "nginx-temp"
    temp.mkdir()
    conf.write_text(f"""\
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen {SERVER}:80;
        root {tree};
    }}
}}
""")
    return conf


def stat_seconds(pid: int, reaped: bool = True) -> float:
    """User + system time of `pid` (and with `reaped`, of the children it has waited for)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15 if reaped else 13]) / TICKS


def descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [d for c in children for d in descendants(c)]


class CpuMeter(threading.Thread):
    """The CPU time of a daemon and of every child it forks meanwhile.

    in.tftpd ignores SIGCHLD, so the kernel reaps its per-transfer children without adding
    their time to its own: each child's time is sampled every 5 ms while it lives (at most the
    last 5 ms of each is missed), on top of the daemon's own time and what it reaped.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.start_own = stat_seconds(pid)
        self.before = {c: self._read(c) for c in descendants(pid)}
        self.seen: dict[int, float] = {}
        self.done = threading.Event()

    @staticmethod
    def _read(pid: int) -> float:
        try:
            return stat_seconds(pid, reaped=False)
        except (OSError, ValueError):
            return -1.0

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.sample()

    def sample(self) -> None:
        for child in descendants(self.pid):
            if (seconds := self._read(child)) >= 0:
                self.seen[child] = seconds

    def stop(self) -> float:
        self.sample()
        self.done.set()
        self.join()
        children = sum(t - max(self.before.get(c, 0.0), 0.0) for c, t in self.seen.items())
        return stat_seconds(self.pid) - self.start_own + children


def bound(daemon: Daemon, proto: str, port: int) -> bool:
    """Whether something in the daemon's namespace has `port` open (its /proc/PID/net view)."""
    lines = daemon.path(f"/proc/{daemon.pid}/net/{proto}").read_text().splitlines()[1:]
    return any(int(line.split()[1].rpartition(":")[2], 16) == port for line in lines)


def storm(client_ns: str, server: Daemon, scheme: str, n: int, size: int,
          cap: float) -> Run:
    urls = [f"{scheme}://{SERVER}/{RELEASE}/{name}" for name in FILES]
    argv = ["ip", "netns", "exec", client_ns, "curl", "-sS", "--max-time", str(int(cap)),
            "-w", "%{size_download}\n", *(["--tftp-blksize", str(BLKSIZE)]
                                          if scheme == "tftp" else []),
            "-o", "/dev/null", urls[0], "-o", "/dev/null", urls[1]]
    meter = CpuMeter(server.pid)
    meter.start()
    start = time.monotonic()
    clients = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        outputs = [c.communicate(timeout=max(1.0, start + cap + 5 - time.monotonic()))
                   for c in clients]
    except subprocess.TimeoutExpired:
        sys.exit(f"{scheme} with {n} clients: not done after {cap:.0f} s")
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
    wall = time.monotonic() - start
    time.sleep(0.2)  # let the daemon reap its last children
    cpu = meter.stop()
    for c, (out, err) in zip(clients, outputs, strict=True):
        got = sum(int(x) for x in out.split())
        if c.returncode != 0 or got != size:
            sys.exit(f"{scheme}: a client exited {c.returncode} with {got} of {size} bytes: {err}")
    return Run(scheme, n, wall, cpu, size)


def table(runs: Sequence[Run], size: int) -> str:
    rows = ["| clients | server | wall s (all done) | MB/s (all) | server CPU s "
            "| CPU s per client |",
            "|---:|---|---:|---:|---:|---:|"]
    for r in runs:
        name = f"in.tftpd, blksize {BLKSIZE}" if r.server == "tftp" else "nginx-light"
        rows.append(f"| {r.clients} | {name} | {r.wall:.2f} | {r.mbps:.1f} | {r.cpu:.2f} | "
                    f"{r.cpu / r.clients:.3f} |")
    return "\n".join(rows) + f"\n\nEach client fetches {size:,} bytes (kernel + initrd).\n"


def chart(runs: Sequence[Run], path: Path) -> None:
    import matplotlib
    matplotlib.use("svg")
    matplotlib.rcParams["svg.hashsalt"] = "tcbuild-storm"  # the same numbers, the same bytes
    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: a small file
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for server, label in (("tftp", f"TFTP (in.tftpd, blksize {BLKSIZE})"),
                          ("http", "HTTP (nginx)")):
        points = [(r.clients, r.wall) for r in runs if r.server == server]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xlabel("clients booting at once")
    ax.set_ylabel("seconds until every client has kernel + initrd")
    ax.set_title("Boot storm: 20 MB kernel + initrd per client")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,10,50", help="comma-separated counts")
    parser.add_argument("--cap", type=float, default=300, help="seconds allowed per run")
    parser.add_argument("--work", type=Path, help="directory for the tree and logs")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/storm.py needs root (network namespaces)")
    counts = [int(c) for c in args.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tcbuild-storm-", dir=args.work))
    work.chmod(0o755)
    tree = work / "tftpboot"
    size = make_tree(tree)
    runs: list[Run] = []
    with Lab(work) as lab:  # stops every daemon by its pid and deletes the namespaces
        server_ns, client_ns = lab.namespace("server"), lab.namespace("client")
        lab.link(server_ns, "srv0", client_ns, "cli0")
        lab.ip(server_ns, "addr", "add", f"{SERVER}/24", "dev", "srv0")
        lab.ip(client_ns, "addr", "add", f"{CLIENT}/24", "dev", "cli0")
        tftpd = lab.start(server_ns, "tftpd", [
            "in.tftpd", "-L", "--user", "tftp", "--address", f"{SERVER}:69", "--secure", tree])
        nginx = lab.start(server_ns, "nginx", [
            "nginx", "-e", work / "nginx-error.log", "-c", nginx_conf(work, tree),
            "-g", "daemon off;"])
        wait_for(lambda: bound(tftpd, "udp", 69), "tftpd listening", watch=[tftpd])
        wait_for(lambda: bound(nginx, "tcp", 80), "nginx listening", watch=[nginx])
        for n in counts:
            for scheme, daemon in (("tftp", tftpd), ("http", nginx)):
                run = storm(client_ns, daemon, scheme, n, size, args.cap)
                print(f"{scheme} {n:3d} clients: {run.wall:7.2f} s, {run.mbps:7.1f} MB/s, "
                      f"server CPU {run.cpu:6.2f} s", flush=True)
                runs.append(run)
    shutil.rmtree(work)
    text = table(runs, size)
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "storm.md").write_text(text)
    print(text)
    chart(runs, args.chart)
    print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
