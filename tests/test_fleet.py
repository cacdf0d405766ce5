"""`tcbuild fleet`: which build and release each node booted, read from the log host's files.

Synthetic logs are written line for line as the generated rules' own format writes them (the
receive time, the source address, the sender's tag and message); the live test has the real
rsyslogd with the generated rules file what nodes send through busybox `syslogd -R`, the boot
line coming from the image's own /opt/bootlocal.sh as tcbuild renders it, then reads those files.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tcbuild.boot.pxelinux import CONFIG_DIR, Label, PxeConfig, mac_config_name, render
from tcbuild.bootserver.rsyslog import rsyslog_conf
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.config.recipe import RELEASE_JSON
from tcbuild.config.recipefile import load_recipe
from tcbuild.fleet.view import parse_line, rotation_rank
from tcbuild.image.overlay import read_overlay
from tcbuild.stages.build import template_context
from tcbuild.tftproot.releases import RELEASES
from tcbuild.tftproot.state import Checksum, Release

from .kit.netns import Lab, run, wait_for
from .kit.requires import require_tool

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples/cluster.toml"
RECIPE = ROOT / "recipes/gameserver.toml"
OLD, NEW = "20261129T080000Z-aaaaaaaaaaaa", "20261130T080000Z-bbbbbbbbbbbb"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def tcbuild(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def syslog(when: datetime, source: str, tag: str, message: str) -> str:
    """A line as the generated rules write it: the log host's RFC 3339 receive time
    (microseconds), the source address, the sender's tag and text."""
    return f"{when.isoformat(timespec='microseconds')} {source} {tag}: {message}\n"


def boot_line(when: datetime, ip: str, release: str | None) -> str:
    build = (release or NEW).rsplit("-", 1)[1]
    said = f", release {release}" if release else ""  # an image from before releases were said
    return syslog(when, ip, "bootlocal", f"game-server node, build {build}{said}, kernel 6.1.0")


def inventory_with(tmp_path: Path, *extra: str) -> Path:
    """The example inventory plus hosts server3.. (macs ...:60 on, addresses .7 on)."""
    text = EXAMPLE.read_text()
    for i, name in enumerate(extra):
        text += (f'\n[[host]]\nname = "{name}"\nmac = "52:54:00:12:34:{60 + i}"\n'
                 f'ip = "10.1.1.{7 + i}"\nsecond_ip = "172.16.1.{7 + i}"\n')
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def tftp_tree(root: Path, default: str, per_mac: dict[str, str]) -> Path:
    """Releases and pxelinux configs as `tcbuild publish` lays them out."""
    for rid in (OLD, NEW):
        release = root / RELEASES / rid
        release.mkdir(parents=True)
        stamp = datetime.strptime(rid[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        files = {name: Checksum(hashlib.sha256(b"").hexdigest(), 0)
                 for name in ("vmlinuz64", "core.hts.gz")}
        (release / RELEASE_JSON).write_bytes(Release(
            rid, release, "recipes/gameserver.toml", "gameserver", rid[-1] * 64, stamp,
            "vmlinuz64", "core.hts.gz", files).text())
    configs = root / CONFIG_DIR
    configs.mkdir()
    for name, rid in {"default": default,
                      **{mac_config_name(m): r for m, r in per_mac.items()}}.items():
        label = Label("tc", f"{RELEASES}/{rid}/vmlinuz64", f"{RELEASES}/{rid}/core.hts.gz",
                      "base norestore nodhcp")
        (configs / name).write_text(render(PxeConfig("tc", (label,)), f"release {rid}"))
    return root


# -- parsing -----------------------------------------------------------------------------------


def test_lines_rsyslog_writes_and_others() -> None:
    line = parse_line("2026-11-30T09:00:01.123456+01:00 10.1.1.5 bootlocal: hello")
    assert line is not None
    assert (line.time, line.source, line.program, line.text) == (
        datetime(2026, 11, 30, 8, 0, 1, 123456, tzinfo=UTC), IPv4Address("10.1.1.5"),
        "bootlocal", "bootlocal: hello")
    tagged = parse_line("2026-11-30T09:00:01Z 10.1.1.6 master[42]: crashed")
    assert tagged is not None and tagged.program == "master"
    # Only lines that carry the source address: a name (the sender's own, RSYSLOG_FileFormat's
    # %HOSTNAME%) or the traditional format without one is not a line the rules write.
    for garbage in ["", "hello world", "\x00\x01binary", "2026-13-45T99:99:99Z h t: x",
                    "2026-11-30T09:00:01+00:00", "2026-11-30T09:00:01Z server1 master: x",
                    "Dec 31 23:59:59 10.1.1.5 master: x", "Foo 30 09:00:01 h t: x",
                    "2026-11-30T09:00:01Z 10.1.1.256 t: x"]:
        assert parse_line(garbage) is None, garbage


def test_rotated_names() -> None:
    base = "server1.log"
    ranks = {name: rotation_rank(base, name) for name in [
        "server1.log", "server1.log.1", "server1.log.2.gz", "server1.log-20261129",
        "server1.log-20261128.gz", "server1.log.3.xz", "server1-err.log", "server10.log",
        "server1.log.bak", "server1.log.1.swp"]}
    assert {n for n, r in ranks.items() if r is None} == {
        "server1-err.log", "server10.log", "server1.log.bak", "server1.log.1.swp"}
    rotated = sorted((r, n) for n, r in ranks.items() if r is not None)
    assert [n for _, n in rotated] == [
        "server1.log.3.xz", "server1.log.2.gz", "server1.log.1", "server1.log-20261128.gz",
        "server1.log-20261129", "server1.log"]


# -- synthetic logs ------------------------------------------------------------------------------


@pytest.fixture
def fleet_site(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Four hosts: server1 current (rotated logs), server2 stale with errors, server3 never
    seen, server4 an image that did not say its release (compared by build)."""
    inventory = inventory_with(tmp_path, "server3", "server4")
    logs = tmp_path / "remote"
    logs.mkdir()
    # server1: three boots over three files, the newest boot in the current file.
    with gzip.open(logs / "server1.log.2.gz", "wt") as f:
        f.write(boot_line(T0 - timedelta(days=2), "10.1.1.5", OLD))
    (logs / "server1.log.1").write_text(
        boot_line(T0 - timedelta(days=1), "10.1.1.5", OLD)
        + "not a syslog line at all\n"
        + syslog(T0 - timedelta(days=1, minutes=-1), "10.1.1.5", "master", "started"))
    (logs / "server1.log").write_bytes(
        b"\xff\xfe garbage \x00 bytes\n"
        + boot_line(T0, "10.1.1.5", NEW).encode()
        + syslog(T0 + timedelta(minutes=5), "10.1.1.5", "master", "players: 12").encode()
        + b"2026-11-30T09:06:00.000000+00:00 10.1.1.5 master: half a line, no newline")
    # server2 booted the old release; its canary config now names the new one.
    with bz2.open(logs / "server2.log-20261129.bz2", "wt") as f:
        f.write(boot_line(T0 - timedelta(days=1), "10.1.1.6", OLD))
    (logs / "server2.log").write_text(syslog(T0, "10.1.1.6", "kernel", "eth1: link up"))
    (logs / "server2-err.log-20261129").write_text(
        syslog(T0 - timedelta(hours=2), "10.1.1.6", "master", "old error"))
    (logs / "server2-err.log").write_text(
        syslog(T0 + timedelta(minutes=1), "10.1.1.6", "master", "map not found: de_dust")
        + "garbage after it\n")
    # server3: nothing, though a server30 and a stranger log here.
    (logs / "server30.log").write_text(boot_line(T0, "10.1.1.99", NEW))
    # server4: a boot line without a release, of the build the config names.
    (logs / "server4.log").write_text(boot_line(T0, "10.1.1.8", None))
    # A truncated archive: what was read counts, the rest is a warning.
    whole = gzip.compress(syslog(T0 + timedelta(hours=1), "10.1.1.8", "master", "late").encode()
                          * 2000)
    (logs / "server4.log.1.gz").write_bytes(whole[: len(whole) // 2])
    tftp = tftp_tree(tmp_path / "tftp", NEW, {"52:54:00:12:34:57": NEW})
    return inventory, logs, tftp


def test_fleet_view(fleet_site: tuple[Path, Path, Path]) -> None:
    inventory, logs, tftp = fleet_site
    done = tcbuild("fleet", "--inventory", inventory, "--logs", logs, "--tftp", tftp)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["server1", "server2", "server3", "server4"]
    one, two, three, four = lines
    assert re.match(r"server1 +current +booted 2026-11-30T09:00:00Z +build bbbbbbbbbbbb "
                    f"+release {NEW} +no errors$", one), one
    assert re.match(r"server2 +STALE +booted 2026-11-29T09:00:00Z +build aaaaaaaaaaaa "
                    f"+release {OLD} +last error 2026-11-30T09:01:00Z master: map not found: "
                    rf"de_dust +\({CONFIG_DIR}/01-52-54-00-12-34-57 names {NEW}\)$", two), two
    assert three == "server3  never seen"
    assert re.match(r"server4 +current +booted 2026-11-30T09:00:00Z +build bbbbbbbbbbbb "
                    r"+release \? +no errors$", four), four
    # The truncated archive: one warning naming it, its readable lines used.
    assert done.stderr.startswith(f"warning: {logs / 'server4.log.1.gz'}: unreadable after line")
    assert len(done.stderr.splitlines()) == 1


def test_fleet_json(fleet_site: tuple[Path, Path, Path]) -> None:
    inventory, logs, tftp = fleet_site
    done = tcbuild("fleet", "--inventory", inventory, "--logs", logs, "--tftp", tftp, "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)  # one object (it was a bare array of hosts and new ones)
    assert list(shown) == ["hosts", "new", "releases", "rollout"]
    assert (shown["new"], shown["rollout"]) == ([], None)  # no discovery range, no rollout
    assert [(r["id"], r["configs"]) for r in shown["releases"]] == [
        (OLD, []), (NEW, ["01-52-54-00-12-34-57", "default"])]
    assert shown["releases"][0] == {"id": OLD, "recipe": "recipes/gameserver.toml",
                                    "time": "2026-11-29T08:00:00+00:00", "size": 0,
                                    "configs": []}
    nodes = {n["name"]: n for n in shown["hosts"]}
    assert [n["state"] for n in nodes.values()] == ["current", "stale", "never seen", "current"]
    two = nodes["server2"]
    assert two == {
        "name": "server2", "ip": "10.1.1.6", "state": "stale",
        "last_seen": "2026-11-30T09:01:00Z", "booted": "2026-11-29T09:00:00Z",
        "boot_seconds": None,  # an image from before the boot line said its uptime
        "build": "aaaaaaaaaaaa", "release": OLD,
        "named": {"config": f"{CONFIG_DIR}/01-52-54-00-12-34-57", "release": NEW},
        "last_error": {"time": "2026-11-30T09:01:00Z",
                       "line": "master: map not found: de_dust"},
        "note": None}
    assert nodes["server1"]["named"] == {"config": f"{CONFIG_DIR}/default", "release": NEW}
    assert nodes["server1"]["last_seen"] == "2026-11-30T09:06:00Z"  # the unterminated line
    assert nodes["server3"]["booted"] is None and nodes["server3"]["last_error"] is None
    assert nodes["server4"]["last_seen"] == "2026-11-30T10:00:00Z"  # from the truncated .gz


def test_without_tftp_and_with_a_foreign_config(fleet_site: tuple[Path, Path, Path]) -> None:
    inventory, logs, tftp = fleet_site
    done = tcbuild("fleet", "--inventory", inventory, "--logs", logs, "--json")
    shown = json.loads(done.stdout)
    assert [n["state"] for n in shown["hosts"]] == ["unknown", "unknown", "never seen", "unknown"]
    assert shown["releases"] == [] and shown["rollout"] is None  # no tree given
    # A config tcbuild did not write: its release is unknown, and so is the node's state.
    (tftp / CONFIG_DIR / "default").write_text("MENU TITLE hand-made\n")
    done = tcbuild("fleet", "--inventory", inventory, "--logs", logs, "--tftp", tftp)
    assert done.returncode == 0
    assert re.search(rf"^server1 +unknown .* no errors +\({CONFIG_DIR}/default boots no tcbuild "
                     r"release\)$", done.stdout, re.M), done.stdout
    assert "Traceback" not in done.stderr


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    for args, message in [
        (["--logs", tmp_path / "nowhere"], f"{tmp_path / 'nowhere'}: no such log directory\n"),
        (["--logs", tmp_path, "--tftp", tmp_path / "no-tftp"],
         f"{tmp_path / 'no-tftp'}: the TFTP root does not exist\n"),
    ]:
        done = tcbuild("fleet", "--inventory", EXAMPLE, *args)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", message)
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\n")
    done = tcbuild("fleet", "--inventory", bad, "--logs", tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(f"{bad}:1:9: invalid TOML")
    assert len(done.stderr.splitlines()) == 1


# -- the real rsyslogd ---------------------------------------------------------------------------


def shell_function(script: str, name: str) -> str:
    """A function's definition in a shell script (from `name() {` to the `}` that closes it)."""
    found = re.search(rf"^{name}\(\) {{.*?^}}$", script, re.M | re.S)
    assert found, name
    return found[0]


def identity_script(build: str) -> str:
    """The part of the image's /opt/bootlocal.sh that says the build and release it booted."""
    recipe = load_recipe(RECIPE)
    context = template_context(recipe, "6.1.0", build)
    (item,) = [i for o in recipe.overlays for i in read_overlay(o.source, context, 0)
               if i.entry.name == "opt/bootlocal.sh"]
    assert item.entry.data is not None
    text = item.entry.data.decode()
    assignments = [line for line in text.splitlines() if re.match(r"(BUILD|RELEASE)=", line)]
    assert len(assignments) == 2, assignments
    functions = [shell_function(text, name) for name in ("say", "info", "identify")]
    return "\n".join(["set -u", *assignments, *functions, "identify"])


def test_fleet_reads_what_rsyslogd_wrote(tmp_path: Path, lab: Lab) -> None:
    require_tool("rsyslogd", "rsyslog")
    require_tool("busybox", "busybox-static")
    require_tool("logger", "bsdutils")
    inventory_file = inventory_with(tmp_path, "server3")
    logs = tmp_path / "remote"
    logs.mkdir()
    text = inventory_file.read_text().replace("[cluster]", f'[cluster]\nlog_dir = "{logs}"', 1)
    inventory_file.write_text(text)
    inventory = load_inventory(inventory_file)
    c = inventory.cluster
    rules = tmp_path / "rsyslog-tcbuild.conf"
    rules.write_text(rsyslog_conf(inventory))
    tftp = tftp_tree(tmp_path / "tftp", NEW, {"52:54:00:12:34:57": NEW})

    prefix = c.internal_subnet.prefixlen
    loghost = lab.namespace("loghost")
    lab.bridge(loghost, f"{c.log_host}/{prefix}")
    rsyslogd = lab.start(loghost, "rsyslogd",
                         ["rsyslogd", "-n", "-f", rules, "-i", tmp_path / "rsyslogd.pid"])
    started = datetime.now(UTC).replace(microsecond=0)
    # server1 booted the new release, server2 the old one (pxelinux put it on their kernel
    # lines); server3 never comes.
    booted = {"server1": NEW, "server2": OLD}
    for i, host in enumerate(inventory.hosts[:2]):
        namespace = lab.namespace(host.name)
        lab.link(loghost, f"port{i}", namespace, "eth1")
        lab.ip(loghost, "link", "set", f"port{i}", "master", "br0")
        lab.ip(namespace, "addr", "add", f"{host.ip}/{prefix}", "dev", "eth1")
        cmdline = tmp_path / f"{host.name}.cmdline"
        cmdline.write_text(f"BOOT_IMAGE={RELEASES}/{booted[host.name]}/vmlinuz64 base "
                           "norestore nodhcp\n")
        node = lab.start(namespace, f"syslogd-{host.name}",
                         ["busybox", "syslogd", "-n", "-R", f"{c.log_host}:{c.syslog_port}"],
                         setup=f"mount --bind {cmdline} /proc/cmdline")
        wait_for(node.path("/dev/log").is_socket, f"{host.name}'s /dev/log", watch=[node])
        build = booted[host.name].rsplit("-", 1)[1]
        said = run("nsenter", "--target", str(node.pid), "--mount", "--net", "sh", "-c",
                   identity_script(build))
        assert said.stdout.startswith(f"bootlocal: game-server node, build {build}, release "
                                      f"{booted[host.name]}, kernel "), said.stdout
        if host.name == "server1":
            run("nsenter", "--target", str(node.pid), "--mount", "--net", "logger", "-t",
                c.game_log_tag, "-p", "local0.err", "out of memory")

    def delivered() -> bool:
        files = {p.name: p.read_text() for p in logs.iterdir()}
        return ("out of memory" in files.get("server1-err.log", "")
                and all("game-server node" in files.get(f"{h}.log", "") for h in booted))

    wait_for(delivered, "the boot lines in the log files", watch=[rsyslogd])
    rsyslogd.stop()
    done = tcbuild("fleet", "--inventory", inventory_file, "--tftp", tftp, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    nodes = {n["name"]: n for n in json.loads(done.stdout)["hosts"]}
    assert [(n["state"], n["release"]) for n in nodes.values()] == [
        ("current", NEW), ("stale", OLD), ("never seen", None)]
    one = nodes["server1"]
    assert one["last_error"]["line"] == f"{c.game_log_tag}: out of memory"
    for when in (one["booted"], one["last_error"]["time"], nodes["server2"]["booted"]):
        assert started - timedelta(minutes=1) <= datetime.fromisoformat(when) \
            <= datetime.now(UTC) + timedelta(minutes=1)
    # What rsyslogd wrote: RFC 3339 times (busybox sends whole seconds), the sender's address,
    # the tag.
    (first,) = (logs / "server1-err.log").read_text().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d:\d\d 10\.1\.1\.5 "
                        rf"{c.game_log_tag}: out of memory", first), first
    assert (logs / "server2.log").read_text().count(f"release {OLD}, kernel ") == 1
    # The kernel's uptime said by the rendered script: /proc/uptime read, the duration parsed.
    assert all(isinstance(n["boot_seconds"], float) and n["boot_seconds"] > 0
               for n in (one, nodes["server2"])), nodes
