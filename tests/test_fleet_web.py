"""`tcbuild fleet --serve`: the page, /api/fleet and /metrics over real HTTP on loopback, read
by a real Prometheus and a real headless Chromium; the follower (`fleet.follow`) against a fresh
reading as logs grow, rotate and fill with garbage; the boot line's uptime.

The logs are written line for line in the format the generated rsyslog rules write
(`tests/test_fleet.py`'s helpers): two nodes, server1 current, server2 stale with errors.
Chromium's screenshot is kept under build/test-artifacts/fleet-page.png.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tcbuild.fleet.follow import Follower
from tcbuild.fleet.overview import report
from tcbuild.fleet.page import page
from tcbuild.fleet.view import Boot, boot_of, parse_line

from .kit.requires import require_tool
from .test_fleet import NEW, OLD, ROOT, T0, boot_line, syslog, tcbuild, tftp_tree

ARTIFACTS = ROOT / "build/test-artifacts"
HOSTILE = ROOT / "tests/data/hostile-log-lines.txt"


def uptime_line(when: timedelta, ip: str, release: str, seconds: float) -> str:
    return boot_line(T0 + when, ip, release).replace("\n", f", uptime={seconds}\n")


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The example inventory's two nodes: server1 current (booted in 41.23 s, a rotated and
    compressed older boot), server2 stale (the old release, two errors)."""
    inventory = ROOT / "examples/cluster.toml"
    logs = tmp_path / "remote"
    logs.mkdir()
    with gzip.open(logs / "server1.log.1.gz", "wt") as f:
        f.write(uptime_line(timedelta(days=-1), "10.1.1.5", OLD, 39.5))
    (logs / "server1.log").write_text(
        uptime_line(timedelta(0), "10.1.1.5", NEW, 41.23)
        + syslog(T0 + timedelta(minutes=5), "10.1.1.5", "master", "players: 12"))
    (logs / "server2.log").write_text(uptime_line(timedelta(hours=-2), "10.1.1.6", OLD, 52.0))
    (logs / "server2-err.log").write_text(
        syslog(T0 - timedelta(hours=1), "10.1.1.6", "master", "map not found: <b>de_dust</b>")
        + syslog(T0, "10.1.1.6", "master", "segfault & <script>alert(1)</script>"))
    tftp = tftp_tree(tmp_path / "tftp", NEW, {"52:54:00:12:34:57": NEW})
    return inventory, logs, tftp


# -- the boot line's uptime, the page (pure) --------------------------------------------------


def test_boot_line_says_how_long_the_boot_took() -> None:
    said = parse_line(uptime_line(timedelta(0), "10.1.1.5", NEW, 41.23).rstrip("\n"))
    assert said is not None and boot_of(said) == Boot(T0, NEW[-12:], NEW, 41.23)
    old = parse_line(boot_line(T0, "10.1.1.5", NEW).rstrip("\n"))  # an image from before
    assert old is not None and boot_of(old) == Boot(T0, NEW[-12:], NEW, None)
    bad = parse_line(boot_line(T0, "10.1.1.5", NEW).rstrip("\n") + ", uptime=x1")
    assert bad is not None and boot_of(bad) == Boot(T0, NEW[-12:], NEW, None)
    script = (ROOT / "overlays/gameserver/opt/bootlocal.sh.j2").read_text()
    assert "read -r uptime _ </proc/uptime" in script and "uptime=$uptime" in script


class Cells(HTMLParser):
    """The nodes table's rows: data-host -> data-state, and every text in the page."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, str] = {}
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "tr" and found.get("data-host"):
            self.states[str(found["data-host"])] = str(found["data-state"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_page_escapes_and_renders_the_same(site: tuple[Path, Path, Path]) -> None:
    inventory, logs, tftp = site
    found = report(inventory, logs, tftp)
    html = page(found)
    assert html == page(report(inventory, logs, tftp))  # deterministic
    parsed = Cells()
    parsed.feed(html.decode())
    assert parsed.states == {"server1": "current", "server2": "stale"}
    assert "script" not in parsed.tags and "b" not in parsed.tags  # the log's markup is text
    assert "master: segfault & <script>alert(1)</script>" in " ".join(parsed.text)
    assert b"<circle" in html and b"41.2 s" in html and b'http-equiv="refresh"' in html


# -- the follower against a fresh reading --------------------------------------------------------


def test_follower_matches_a_fresh_reading_through_growth_rotation_and_garbage(
        site: tuple[Path, Path, Path]) -> None:
    inventory, logs, tftp = site
    follower = Follower(inventory, logs, tftp)

    def same() -> dict[str, int]:
        found, counted = follower.read()
        assert found.as_json() == report(inventory, logs, tftp).as_json()
        return counted

    # Error lines are counted as they are appended (a counter from the follower's start).
    assert same() == {"server1": 0, "server2": 0}
    err = logs / "server2-err.log"
    with err.open("a") as f:  # appended, the last line half written
        f.write(syslog(T0 + timedelta(minutes=1), "10.1.1.6", "master", "third"))
        f.write(syslog(T0 + timedelta(minutes=2), "10.1.1.6", "master", "fourth").rstrip("\n"))
    assert same()["server2"] == 1  # the half line shows, is counted once whole
    with err.open("a") as f:
        f.write(" and its end\n")
    assert same()["server2"] == 2
    assert follower.report().hosts[1].error.text == "master: fourth and its end"  # type: ignore[union-attr]
    # Rotated by renaming: the same file goes on under its new name, nothing read again.
    err.rename(logs / "server2-err.log.1")
    assert same()["server2"] == 2 and follower.bytes_read == 0
    # Compressed under it, then a new file: counted as it is new since the start.
    with gzip.open(logs / "server2-err.log.2.gz", "wb") as g:
        g.write((logs / "server2-err.log.1").read_bytes())
    (logs / "server2-err.log.1").unlink()
    assert same()["server2"] == 2
    err.write_text(syslog(T0 + timedelta(hours=1), "10.1.1.6", "master", "fifth"))
    assert same()["server2"] == 3
    (logs / "server2-err.log.2.gz").unlink()  # gone: what it said goes, its count stays
    assert same()["server2"] == 3
    err.write_text("")  # truncated in place
    assert same()["server2"] == 3 and follower.report().hosts[1].error is None
    # server1 booted again, then the hostile corpus in both its files.
    with (logs / "server1.log").open("a") as f:
        f.write(uptime_line(timedelta(hours=1), "10.1.1.5", NEW, 40.0))
    corpus = HOSTILE.read_bytes()
    for name in ("server1.log", "server1-err.log"):
        with (logs / name).open("ab") as f:
            f.write(corpus)
    shown = same()
    host = follower.report().hosts[0]
    assert host.boot is not None and host.boot.seconds == 40.0 and shown["server1"] == 0


def test_ten_thousand_nodes_are_read_from_their_end_then_only_what_they_gain(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """10,000 nodes with a day of lines each (a boot, then 24 others) and older rotations: the
    first reading takes each file's end back to its boot (no older rotation); a scrape after
    100 files grew reads those 100 appends and nothing else. (Its speed is `bench/fleet.py`'s.)"""
    from prometheus_client.parser import text_string_to_metric_families

    from tcbuild.fleet.metrics import exposition

    n = 10000
    hosts = "".join(f'[[host]]\nname = "n{i}"\nmac = "52:54:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:'
                    f'{i & 255:02x}:01"\nip = "10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"\n'
                    f'second_ip = "172.16.{100 + (i >> 8)}.{i & 255}"\n' for i in range(1, n + 1))
    cluster = (ROOT / "examples/cluster.toml").read_text().split("[group.canary]")[0]
    cluster = cluster.replace('"10.1.1.0/24"', '"10.0.0.0/8"').replace(
        '"10.1.1.1"', '"10.255.255.254"')
    inventory = tmp_path / "big.toml"
    inventory.write_text(cluster + hosts)
    logs = tmp_path / "remote"
    logs.mkdir()
    day = [syslog(T0 + timedelta(hours=h), "IP", "nrpe", f"hour {h}") for h in range(24)]
    for i in range(1, n + 1):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        lines = [uptime_line(timedelta(0), ip, NEW, 40 + i % 7),
                 *(d.replace("IP", ip) for d in day)]
        (logs / f"n{i}.log").write_text("".join(lines))
        (logs / f"n{i}-err.log").write_text(syslog(T0, ip, "master", "oops"))
        if i % 10 == 0:  # an older rotation, never needed: the current file has the boot
            (logs / f"n{i}.log.2.gz").write_bytes(b"no gzip: read, it would warn\n")
            os.utime(logs / f"n{i}.log.2.gz", (0, 0))
    tftp = tftp_tree(tmp_path / "tftp", NEW, {})
    follower = Follower(inventory, logs, tftp)
    found, counted = follower.read()
    assert {h.state.value for h in found.hosts} == {"current"} and sum(counted.values()) == 0
    assert follower.bytes_read == 0  # no half line after the ends read back
    assert not [r for r in caplog.records if "unreadable" in r.getMessage()]
    appended = 0
    for i in range(1, 101):
        line = syslog(T0, f"10.0.{i >> 8 & 255}.{i & 255}", "master", "again")
        with (logs / f"n{i}-err.log").open("a") as f:
            f.write(line)
        appended += len(line)
    text = exposition(*follower.read())
    assert follower.bytes_read == appended
    samples = {s.labels.get("host"): s.value for family in text_string_to_metric_families(
        text.decode()) if family.name == "tcbuild_node_errors" for s in family.samples}
    assert len(samples) == n and samples["n100"] == 1 and samples["n101"] == 0
    follower.read()
    assert follower.bytes_read == 0  # nothing grew: nothing read


# -- the server, over real HTTP ------------------------------------------------------------------


class Served:
    """`tcbuild fleet --serve 127.0.0.1:0` as a process; its URL from its first line."""

    def __init__(self, *args: str | Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tcbuild", "fleet", *map(str, args), "--serve", "127.0.0.1:0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.process.stderr.read()  # type: ignore[union-attr]

    def get(self, path: str, method: str = "GET") -> tuple[int, str, bytes]:
        request = urllib.request.Request(self.url.rstrip("/") + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read()

    def stop(self) -> tuple[int, str]:
        """SIGTERM; its exit status and what it said on stderr."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err


@pytest.fixture
def served(site: tuple[Path, Path, Path]) -> Iterator[Served]:
    inventory, logs, tftp = site
    server = Served("--inventory", inventory, "--logs", logs, "--tftp", tftp)
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def test_serve_page_api_metrics_and_nothing_else(site: tuple[Path, Path, Path],
                                                served: Served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    inventory, logs, tftp = site
    tree = sorted(str(p.relative_to(tftp)) for p in tftp.rglob("*"))
    status, kind, html = served.get("/")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    cells = Cells()
    cells.feed(html.decode())
    assert cells.states == {"server1": "current", "server2": "stale"}
    status, kind, api = served.get("/api/fleet")
    assert (status, kind) == (200, "application/json")
    printed = tcbuild("fleet", "--inventory", inventory, "--logs", logs, "--tftp", tftp, "--json")
    assert api.decode() == printed.stdout and json.loads(api)["hosts"][0]["boot_seconds"] == 41.23
    status, kind, text = served.get("/metrics")
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text.decode())
               for s in family.samples}
    assert samples[("tcbuild_node_current", (("host", "server1"),))] == 1
    assert samples[("tcbuild_node_current", (("host", "server2"),))] == 0
    assert samples[("tcbuild_node_boot_duration_seconds", (("host", "server1"),))] == 41.23
    assert samples[("tcbuild_node_errors_total", (("host", "server2"),))] == 0  # none since
    assert samples[("tcbuild_node_boot_timestamp_seconds", (("host", "server1"),))] == (
        T0.timestamp())
    assert samples[("tcbuild_release_info", (("build", NEW[-12:]), ("release", NEW)))] == 1
    assert samples[("tcbuild_node_info", (("build", OLD[-12:]), ("host", "server2"),
                                          ("release", OLD), ("state", "stale")))] == 1
    # Read-only, three pages: the rest is 404 (no file of the tree or the logs), POST 405.
    for path in ["/server1.log", "/../remote/server1.log", "/api", "/metrics/", "/index.html",
                 "/%2e%2e/etc/passwd", "/tcbuild/releases"]:
        assert served.get(path)[0] == 404, path
    assert served.get("/metrics", "POST")[0] == 405
    assert served.get("/", "HEAD")[:2] == (200, "text/html; charset=utf-8")
    # Kept current: server2 boots the new release, in 48 s.
    with (logs / "server2.log").open("a") as f:
        f.write(uptime_line(timedelta(hours=1), "10.1.1.6", NEW, 48.0))
    assert json.loads(served.get("/api/fleet")[2])["hosts"][1]["state"] == "current"
    assert b'tcbuild_node_current{host="server2"} 1.0' in served.get("/metrics")[2]
    code, err = served.stop()
    assert code == 0 and "Traceback" not in err, err
    assert sorted(str(p.relative_to(tftp)) for p in tftp.rglob("*")) == tree
    assert sorted(p.name for p in logs.iterdir()) == [
        "server1.log", "server1.log.1.gz", "server2-err.log", "server2.log"]  # wrote nothing


def test_hostile_logs_and_rotation_never_crash_the_server(site: tuple[Path, Path, Path],
                                                          served: Served) -> None:
    _, logs, _ = site
    lines = HOSTILE.read_bytes().splitlines(keepends=True)
    for number, line in enumerate(lines):
        for name in ("server1.log", "server1-err.log", "server2-err.log"):
            with (logs / name).open("ab") as f:
                f.write(line)
        if number % 8 == 0 or number == len(lines) - 1:
            for path in ("/", "/api/fleet", "/metrics"):
                assert served.get(path)[0] == 200, (path, line)
    # server1 counts none of them (it said no error), server2 those in its format from its address.
    theirs = sum(1 for line in lines if (said := parse_line(line.decode(errors="replace")
                                                            .rstrip("\r\n"))) is not None
                 and str(said.source) == "10.1.1.6")
    assert theirs == 1

    def count(host: str) -> bytes:
        shown = served.get("/metrics")[2]
        return shown.split(f'tcbuild_node_errors_total{{host="{host}"}} '.encode())[1].split()[0]

    assert (count("server1"), count("server2")) == (b"0.0", b"1.0")  # appended since it started
    # Rotated and compressed under it, then a new error: the count goes on, never back.
    err = logs / "server2-err.log"
    (logs / "server2-err.log.1.gz").write_bytes(gzip.compress(err.read_bytes()))
    err.unlink()
    assert count("server2") == b"1.0"
    err.write_text(syslog(T0 + timedelta(hours=2), "10.1.1.6", "master", "after rotation"))
    assert count("server2") == b"2.0"
    (logs / "server2-err.log.1.gz").unlink()
    assert count("server2") == b"2.0"
    code, err_text = served.stop()
    assert code == 0 and "Traceback" not in err_text, err_text


def test_serve_bad_input_is_one_line(tmp_path: Path) -> None:
    inventory = ROOT / "examples/cluster.toml"
    for args, says in [(("--serve", "localhost:http"), "--serve localhost:http: not [ADDR:]PORT"),
                       (("--serve", "0", "--logs", tmp_path / "none"), "no such log directory"),
                       (("--serve", "0", "--logs", tmp_path, "--json"), "--serve and --json"),
                       (("--serve", "0", "--logs", tmp_path, "--tftp", "ssh://boot1/tftpboot"),
                        "ssh://boot1/tftpboot: fleet --serve takes local TFTP roots only")]:
        done = tcbuild("fleet", "--inventory", inventory, *args)
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1 and not done.stdout


# -- a real Prometheus, a real browser -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_scrapes_it(tmp_path: Path, served: Served) -> None:
    require_tool("prometheus", "prometheus")
    target = served.url.removeprefix("http://").rstrip("/")
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                      "scrape_configs:\n  - job_name: tcbuild\n"
                      f"    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    try:
        deadline, found = time.monotonic() + 60, {}
        while time.monotonic() < deadline and len(found) < 2:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query="
                                            "tcbuild_node_current", timeout=5) as answer:
                    result = json.load(answer)["data"]["result"]
            except (OSError, ValueError):
                continue
            found = {r["metric"]["host"]: r["value"][1] for r in result}
        assert found == {"server1": "1", "server2": "0"}, (tmp_path / "prometheus.log").read_text()
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium in a process group of its own, killed whole if it hangs."""
    process = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={user_data}", "--no-first-run", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_chromium_renders_the_page(tmp_path: Path, served: Served) -> None:
    require_tool("chromium", "chromium")
    dom = chromium("--dump-dom", served.url, user_data=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    cells = Cells()
    cells.feed(dom.stdout)
    assert cells.states == {"server1": "current", "server2": "stale"}
    assert "script" not in cells.tags and "circle" in cells.tags  # the chart, no log's markup
    assert "master: segfault & <script>alert(1)</script>" in " ".join(cells.text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "fleet-page.png"
    shot.unlink(missing_ok=True)
    done = chromium(f"--screenshot={shot}", "--window-size=1200,800", "--hide-scrollbars",
                    served.url, user_data=tmp_path / "profile")
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr
    assert shot.stat().st_size > 10_000  # a page, not a blank


def test_a_rollout_under_way_on_the_page_and_in_the_metrics(
        site: tuple[Path, Path, Path]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tcbuild.fleet.metrics import exposition
    from tcbuild.tftproot import rollout as record

    inventory, logs, tftp = site
    rolling = record.Rollout(
        NEW, NEW[-12:] * 5 + "abcd", (("server2",), ("server1",)),
        {"server2": record.HostRecord("01-52-54-00-12-34-57", None, OLD,
                                      record.HostState.REBOOTING),
         "server1": record.HostRecord("01-52-54-00-12-34-56", None, NEW)},
        {}, None, False, "recipes/gameserver.toml", str(inventory), str(logs))
    record.write(tftp, rolling)
    found, errors = Follower(inventory, logs, tftp).read()
    cells = Cells()
    cells.feed(page(found).decode())
    assert cells.states == {"server1": "current", "server2": "rolling out"}
    assert "rollout wave 1: rebooting" in cells.text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(exposition(found, errors).decode())
               for s in family.samples}
    assert samples[("tcbuild_rollout_wave", (("phase", "running"), ("release", NEW)))] == 1
    assert samples[("tcbuild_rollout_host_state", (("host", "server2"),
                                                   ("state", "rebooting")))] == 1
    assert samples[("tcbuild_rollout_host_state", (("host", "server1"), ("state", "pending")))] == 1
