"""Remote TFTP roots over real OpenSSH and rsync: two boot servers, each a network namespace
running `sshd` (its own config, host key and authorized key made here), `in.tftpd` and nginx
over its own root; tcbuild runs in a third namespace (`ip netns exec`) with an ssh config of
the test's (`TCBUILD_SSH=ssh -F ...`, HOME in tmp: the operator's ~/.ssh is never read).

Publish to both, a second publish sending a fraction of the first's bytes, releases, verify,
rollback; a server lost mid-upload switching no root; the bad inputs (unknown host key,
refused login, no root, no rsync on the far side) one line each, switching nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcbuild.fleet import boottest

from .kit.netns import Daemon, Lab, wait_for
from .kit.nodekit import BUILD_ID, built_id
from .kit.requires import require_tool
from .test_publish import built

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "recipes/gameserver.toml"


@dataclass
class Server:
    alias: str
    namespace: str
    address: str
    root: Path
    sshd: Daemon | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.alias}{self.root}"


@dataclass
class Remotes:
    lab: Lab
    site: Path
    ops: str
    servers: list[Server]
    ssh_config: Path
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(self.home),
                "XDG_CACHE_HOME": str(self.home / "cache"),
                "TCBUILD_SSH": f"ssh -F {self.ssh_config}", **extra}

    def tcbuild(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """tcbuild in the operator's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.ops, sys.executable, "-m", "tcbuild",
                               *args], cwd=self.site, env=self.env(**extra), capture_output=True,
                              text=True, timeout=600)

    def publish(self, *urls: str, **extra: str) -> subprocess.CompletedProcess[str]:
        roots = [arg for url in urls for arg in ("--tftp", url)]
        stand_in = self.site / "bootloader"  # else Debian's, found where they are
        loader = ["--bootloader-dir", str(stand_in)] if stand_in.is_dir() else []
        return self.tcbuild("publish", RECIPE, *roots, "--offline", "--cache",
                            str(self.site / "cache"), *loader, "--quiet", "--json", **extra)

    def fetch(self, server: Server, path: str, via: str = "tftp") -> bytes:
        """A file as the server serves it (TFTP or HTTP), from the operator's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.ops, "curl", "-sf", "--max-time",
                               "10", f"{via}://{server.address}/{path}"],
                              capture_output=True, check=True, timeout=30).stdout

    def start_sshd(self, server: Server, name: str = "", port: int = 22,
                   extra: str = "") -> Daemon:
        work = self.lab.workdir
        config = work / f"sshd-{server.alias}{name}.conf"
        config.write_text(
            f"ListenAddress {server.address}:{port}\nHostKey {work}/host_key\nPidFile none\n"
            f"AuthorizedKeysFile {work}/authorized_keys\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers root\n"
            f"PermitRootLogin prohibit-password\n{extra}")
        daemon = self.lab.start(server.namespace, f"sshd-{server.alias}{name}",
                                ["/usr/sbin/sshd", "-D", "-e", "-f", config], private=["/run"],
                                setup="mkdir -p /run/sshd; chmod 755 /run/sshd")
        daemon.wait_for_output("Server listening")
        return daemon


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tcbuild-test", "-f",
                    str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture
def remotes(lab: Lab, site: Path) -> Iterator[Remotes]:
    yield boot_servers(lab, site)


@pytest.fixture
def bootable_remotes(lab: Lab, node: Path) -> Iterator[Remotes]:
    """The same, over the example node built from the bootable mirror (the real bootloader)."""
    require_tool("dnsmasq", "dnsmasq-base")
    yield boot_servers(lab, node)


def boot_servers(lab: Lab, site: Path) -> Remotes:
    """The two boot servers and the operator's namespace (see the module's text)."""
    for tool, package in (("sshd", "openssh-server"), ("ssh", "openssh-client"),
                          ("rsync", "rsync"), ("in.tftpd", "tftpd-hpa"), ("nginx", "nginx-light"),
                          ("curl", "curl")):
        require_tool(tool if tool != "sshd" else "/usr/sbin/sshd", package)
    built(site)  # the image, built with the loopback mirror; the publishes are --offline
    work = lab.workdir
    home = site / "home"
    home.mkdir()
    host_key = keygen(work / "host_key")
    (work / "authorized_keys").write_text(keygen(work / "client_key") + "\n")
    keygen(work / "other_key")
    ops = lab.namespace("rrops")
    servers = []
    for i, alias in enumerate(("srv-a", "srv-b"), 1):
        namespace = lab.namespace(f"rr{alias[-1]}")
        lab.link(ops, f"rr-o{alias[-1]}", namespace, f"rr-{alias[-1]}")
        lab.ip(ops, "addr", "add", f"10.79.{i}.1/24", "dev", f"rr-o{alias[-1]}")
        lab.ip(namespace, "addr", "add", f"10.79.{i}.2/24", "dev", f"rr-{alias[-1]}")
        root = site / alias / "tftp"
        root.mkdir(parents=True)
        servers.append(Server(alias, namespace, f"10.79.{i}.2", root))
    (work / "known_hosts").write_text("".join(
        f"{s.address} {host_key}\n[{s.address}]:2222 {host_key}\n" for s in servers))
    (work / "empty_known_hosts").write_text("")
    a, b = servers
    config = work / "ssh_config"
    config.write_text(
        f"Host srv-b-unknown\n  HostName {b.address}\n"
        f"  UserKnownHostsFile {work}/empty_known_hosts\n"
        f"Host srv-b-refused\n  HostName {b.address}\n  User daemon\n"
        f"Host srv-b-norsync\n  HostName {b.address}\n  Port 2222\n"
        f"Host srv-a\n  HostName {a.address}\nHost srv-b\n  HostName {b.address}\n"
        f"Host *\n  User root\n  IdentityFile {work}/client_key\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {work}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
        "  ConnectTimeout 5\n")
    found = Remotes(lab, site, ops, servers, config, home)
    for server in servers:
        server.sshd = found.start_sshd(server)
        lab.start(server.namespace, f"tftpd-{server.alias}",
                  ["in.tftpd", "-L", "--user", "root", "--address", "0.0.0.0:69",
                   "--secure", server.root])
        nginx = work / f"nginx-{server.alias}.conf"
        temp = work / f"nginx-{server.alias}"
        temp.mkdir()
        nginx.write_text(
            f"daemon off;\nuser root;\npid {temp}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {temp};\n"
            f"  proxy_temp_path {temp};\n  fastcgi_temp_path {temp};\n"
            f"  server {{ listen 80; root {server.root}; }}\n}}\n")
        lab.start(server.namespace, f"nginx-{server.alias}",
                  ["nginx", "-e", "stderr", "-p", temp, "-c", nginx])
    return found


def tree(root: Path) -> dict[str, str]:
    """Every file of a root by its sha256 (a staging directory left behind aside)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
            and not p.relative_to(root).as_posix().startswith(("tcbuild/staging-",
                                                               "tcbuild/.lock"))}


def served(remotes: Remotes) -> list[bytes]:
    """What each server serves now: the default config over TFTP, its twin over HTTP."""
    return [part for s in remotes.servers for part in
            (remotes.fetch(s, "pxelinux.cfg/default"),
             remotes.fetch(s, "ipxe/default.ipxe", via="http"))]


def change_overlay(site: Path, text: str) -> None:
    changed = site / "overlays/gameserver/opt/bootlocal.sh.j2"
    changed.write_text(changed.read_text() + f"echo {text}\n")


def published(done: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert done.returncode == 0, done.stderr
    plans = json.loads(done.stdout)
    return plans if isinstance(plans, list) else [plans]


def test_publish_releases_verify_and_rollback_on_two_remote_roots(remotes: Remotes) -> None:
    a, b = remotes.servers
    started = time.monotonic()
    first = published(remotes.publish(a.url, b.url))
    first_seconds = time.monotonic() - started
    assert [p["tftp"] for p in first] == [a.url, b.url]
    assert tree(a.root) == tree(b.root)
    assert b"core.hts.gz" in remotes.fetch(a, "pxelinux.cfg/default")
    assert remotes.fetch(b, "boot.ipxe", via="http").startswith(b"#!ipxe")
    verify = remotes.tcbuild("verify", "--tftp", a.url, "--tftp", b.url)
    assert verify.returncode == 0 and verify.stdout == f"{a.url}, {b.url}: ok\n", verify.stderr

    change_overlay(remotes.site, "second")
    built(remotes.site)
    started = time.monotonic()
    second = published(remotes.publish(a.url, b.url))
    second_seconds = time.monotonic() - started
    for one, two in zip(first, second, strict=True):
        assert isinstance(one["sent_bytes"], int) and isinstance(two["sent_bytes"], int)
        assert two["sent_bytes"] < one["sent_bytes"] / 10, (one, two)
    print(f"\nfirst publish: {first_seconds:.1f} s, sent {[p['sent_bytes'] for p in first]}; "
          f"second: {second_seconds:.1f} s, sent {[p['sent_bytes'] for p in second]}")
    now = str(second[0]["release"])
    assert now.encode() in remotes.fetch(b, "ipxe/default.ipxe", via="http")

    listing = remotes.tcbuild("releases", "--tftp", a.url, "--tftp", b.url)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == f"{a.url}:" and f"{b.url}:" in lines
    assert sum(f"{now}  " in line and "current: default" in line for line in lines) == 2
    assert sum(line.startswith("  bootloader: pxelinux.0 ") for line in lines) == 2
    assert not any("disagree" in line for line in lines)

    back = remotes.tcbuild("rollback", "--tftp", a.url, "--tftp", b.url)
    assert back.returncode == 0, back.stderr
    was = str(first[0]["release"])
    assert back.stdout.splitlines() == [f"{s.url}: default now boots {was} (was {now})"
                                        for s in (a, b)]
    for server in (a, b):
        assert was.encode() in remotes.fetch(server, "pxelinux.cfg/default")
        assert was.encode() in remotes.fetch(server, "ipxe/default.ipxe", via="http")
    assert tree(a.root) == tree(b.root)
    logs = remotes.site / "logs"
    logs.mkdir()
    fleet = remotes.tcbuild("fleet", "--inventory", "examples/cluster.toml", "--logs", str(logs),
                            "--tftp", b.url, "--json")
    assert fleet.returncode == 0, fleet.stderr
    shown = {r["id"]: r for r in json.loads(fleet.stdout)["releases"]}
    assert set(shown) == {was, now}, shown

    change_overlay(remotes.site, "third")  # only A gets it: the roots disagree
    built(remotes.site)
    published(remotes.publish(a.url))
    listing = remotes.tcbuild("releases", "--tftp", a.url, "--tftp", b.url)
    assert any(line.startswith(f"pxelinux.cfg/default: the roots disagree: boots {a.url} ")
               for line in listing.stdout.splitlines()), listing.stdout
    verify = remotes.tcbuild("verify", "--tftp", a.url, "--tftp", b.url)
    assert verify.returncode == 1
    assert f"pxelinux.cfg/default: the roots disagree: boots {a.url} " in verify.stderr


def test_a_rollout_over_two_remote_roots_switches_both_wave_by_wave(remotes: Remotes) -> None:
    """Stand-in nodes power-cycled through `power_command` boot what root A names; every
    step (the record, each host's config, the final default) reaches both roots, and no lock
    is held while a node boots (`verify` over both roots answers mid-rollout)."""
    a, b = remotes.servers
    first = published(remotes.publish(a.url, b.url))
    logs = remotes.site / "logs"
    logs.mkdir()
    inventory = remotes.site / "examples/cluster.toml"
    # Each power-cycle verifies both roots first (a lock held now would make it fail after
    # its 30 s wait), then boots the node.
    power = remotes.site / "power.sh"
    power.write_text(
        f"TCBUILD_SSH='ssh -F {remotes.ssh_config}' {sys.executable} -m tcbuild verify "
        f"--tftp {a.url} --tftp {b.url} >>{logs}/verify.log 2>&1\n"
        f"echo $? >>{logs}/verify.log\n"
        f'exec {sys.executable} -m tests.kit.fakenode {a.root} {logs} {inventory} - "$1" "$2"\n')
    inventory.write_text(inventory.read_text().replace(
        "[cluster]\n", f"[cluster]\npower_command = 'sh {power} {{action}} {{name}}'\n", 1))
    for name in ("server1", "server2"):  # on release A, as the first publish left them
        subprocess.run([sys.executable, "-m", "tests.kit.fakenode", str(a.root), str(logs),
                        str(inventory), "-", "cycle", name], cwd=ROOT, check=True)
    change_overlay(remotes.site, "rolled")
    built(remotes.site)
    done = remotes.tcbuild("rollout", RECIPE, "--tftp", a.url, "--tftp", b.url, "--inventory",
                           str(inventory), "--logs", str(logs), "--offline", "--cache",
                           str(remotes.site / "cache"), "--waves", "1,100%", "--healthy-for",
                           "0.2", "--poll", "0.1", "--boot-timeout", "60",
                           *(["--bootloader-dir", str(remotes.site / "bootloader")]
                             if (remotes.site / "bootloader").is_dir() else []))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith("rolled out to 2 host(s)"), done.stdout
    assert (logs / "power.log").read_text().splitlines()[2:] == ["cycle server1",
                                                                  "cycle server2"]
    verified = (logs / "verify.log").read_text().splitlines()
    assert verified[1::2] == ["0", "0"], verified  # mid-rollout: both roots readable, sound
    new = json.loads((a.root / "tcbuild/rollout.json").read_text())["release"]
    assert new != first[0]["release"]
    for server in (a, b):
        state = json.loads((server.root / "tcbuild/rollout.json").read_text())
        assert (state["phase"], state["release"]) == ("done", new)
        assert new.encode() in remotes.fetch(server, "pxelinux.cfg/default")
        for config in (server.root / "pxelinux.cfg").iterdir():  # the canary's own too
            assert new in config.read_text(), config
    assert tree(a.root) == tree(b.root)
    verify = remotes.tcbuild("verify", "--tftp", a.url, "--tftp", b.url)
    assert verify.returncode == 0, verify.stderr


def test_a_server_lost_mid_upload_switches_no_root(remotes: Remotes) -> None:
    """...nor a local root published with them (local roots switch between the phases)."""
    a, b = remotes.servers
    local = remotes.site / "tftp"
    (local / "README.site").unlink()  # the operator's own file: only in this root
    published(remotes.publish(str(local), a.url, b.url))
    assert tree(local) == tree(a.root) == tree(b.root)
    trees, serving = [tree(local), tree(a.root), tree(b.root)], served(remotes)
    change_overlay(remotes.site, "lost")
    built(remotes.site)
    wrappers = remotes.site / "wrappers"  # the operator's rsync, b's sshd killed as it starts
    wrappers.mkdir()
    (wrappers / "rsync").write_text(
        "#!/bin/sh\ncase \"$*\" in *srv-b:*staging-*)\n"
        f"  for pid in $(ip netns pids {b.namespace}); do\n"
        "    [ \"$(cat /proc/$pid/comm)\" = sshd ] && kill $pid\n  done ;;\nesac\n"
        "exec /usr/bin/rsync \"$@\"\n")
    (wrappers / "rsync").chmod(0o755)
    done = remotes.publish(str(local), a.url, b.url, PATH=f"{wrappers}:{os.environ['PATH']}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"{b.url}: uploading failed"), done.stderr
    assert [tree(local), tree(a.root), tree(b.root)] == trees
    assert not list((a.root / "tcbuild").glob("staging-*"))  # removed; b's by the next push
    assert served(remotes) == serving
    b.sshd = remotes.start_sshd(b, name="-again")
    again = published(remotes.publish(str(local), a.url, b.url))
    assert again[0]["release"] == again[1]["release"] == again[2]["release"]
    assert not list((b.root / "tcbuild").glob("staging-*"))
    assert tree(local) == tree(a.root) == tree(b.root) and served(remotes) != serving


def test_bad_remote_roots_are_one_line_each_and_switch_nothing(remotes: Remotes) -> None:
    a, b = remotes.servers
    norsync = remotes.site / "norsync"  # a PATH with every tool but rsync
    norsync.mkdir()
    for directory in ("/usr/bin", "/usr/sbin"):
        for tool in Path(directory).iterdir():
            if tool.name != "rsync" and not (norsync / tool.name).exists():
                (norsync / tool.name).symlink_to(tool)
    remotes.start_sshd(b, name="-norsync", port=2222, extra=f"SetEnv PATH={norsync}\n")
    published(remotes.publish(a.url, b.url))
    before = [tree(a.root), tree(b.root)]
    change_overlay(remotes.site, "bad")
    built(remotes.site)
    cases = [
        (f"ssh://srv-b-unknown{b.root}", 1, "connecting failed (ssh): Host key verification "
         "failed. (the host key is not in known_hosts"),
        (f"ssh://srv-b-refused{b.root}", 1, "connecting failed (ssh): daemon@10.79.2.2: "
         "Permission denied (publickey). (the login was refused)"),
        (f"ssh://srv-b{b.root}/missing", 2, "the TFTP root does not exist"),
        (f"ssh://srv-b-norsync{b.root}", 1, "rsync is not installed on the far side (or not "
         "in the PATH of that login): it is needed there"),
    ]
    for url, status, says in cases:
        done = remotes.publish(a.url, url)
        assert done.returncode == status, (url, done.stderr)
        assert done.stderr.splitlines() == [f"{url}: {says}"] or (
            done.stderr.startswith(f"{url}: {says}") and done.stderr.count("\n") == 1), \
            done.stderr
        assert [tree(a.root), tree(b.root)] == before, url
        free = subprocess.run(["flock", "-n", str(a.root / "tcbuild/.lock"), "true"])
        assert free.returncode == 0, f"{url}: the lock of {a.url} was not released"
        for command in ("verify", "releases"):
            done = remotes.tcbuild(command, "--tftp", url)
            assert done.returncode == status and done.stderr.startswith(f"{url}: {says}")


def boot_from(remotes: Remotes, server: Server, index: int, via: str) -> str:
    """A QEMU node on a tap of `server`'s namespace, its DHCP (dnsmasq) pointing at the
    server's own TFTP (pxelinux.0) or HTTP (boot.ipxe, through the NIC's iPXE); the build id
    its console printed."""
    lab, tap, address = remotes.lab, f"rrtap{index}", f"10.80.{index}.1"
    lab.ip(server.namespace, "tuntap", "add", "dev", tap, "mode", "tap")
    lab.interfaces.add(tap)
    lab.ip(server.namespace, "addr", "add", f"{address}/24", "dev", tap)
    lab.ip(server.namespace, "link", "set", tap, "up")
    boot = (["--dhcp-boot", f"pxelinux.0,,{address}"] if via == "tftp" else
            ["--dhcp-match", "set:ipxe,175", "--dhcp-boot",
             f"tag:ipxe,http://{address}/boot.ipxe"])
    lab.start(server.namespace, f"dnsmasq-{server.alias}", [
        "dnsmasq", "-d", "--conf-file=/dev/null", "--port=0", "--user=root", "--pid-file=",
        "--leasefile-ro", f"--interface={tap}", "--bind-interfaces",
        f"--dhcp-range=10.80.{index}.50,10.80.{index}.99,1h", *boot])
    console = lab.workdir / f"{server.alias}.console"
    qemu = lab.start(server.namespace, f"qemu-{server.alias}", boottest.pxe_command(
        server.root, console, netdev=f"tap,id=n0,ifname={tap},script=no,downscript=no"))
    wait_for(lambda: console.exists() and BUILD_ID.search(console.read_text(errors="replace"))
             is not None, f"a boot from {server.url} via {via}", timeout=300, watch=[qemu])
    found = BUILD_ID.search(console.read_text(errors="replace"))
    assert found is not None
    qemu.stop()
    return found[1]


def test_a_node_boots_from_each_remote_root(bootable_remotes: Remotes) -> None:
    """One node boots from server A over TFTP, one from server B over HTTP (iPXE)."""
    a, b = bootable_remotes.servers
    built(bootable_remotes.site)
    started = time.monotonic()
    first = published(bootable_remotes.publish(a.url, b.url))
    first_seconds = time.monotonic() - started
    want = built_id(bootable_remotes.site)
    assert boot_from(bootable_remotes, a, 1, "tftp") == want
    assert boot_from(bootable_remotes, b, 2, "http") == want
    change_overlay(bootable_remotes.site, "second")  # the bootable image: the docs' numbers
    built(bootable_remotes.site)
    started = time.monotonic()
    second = published(bootable_remotes.publish(a.url, b.url))
    second_seconds = time.monotonic() - started
    sent = [[int(str(p["sent_bytes"])) for p in plans] for plans in (first, second)]
    assert all(two < one / 10 for one, two in zip(*sent, strict=True)), sent
    print(f"\nbootable image: first publish {first_seconds:.1f} s, sent {sent[0]}; second "
          f"{second_seconds:.1f} s, sent {sent[1]}")


def test_a_server_lost_mid_switch_is_named_with_the_command_that_finishes_it(
        remotes: Remotes) -> None:
    a, b = remotes.servers
    published(remotes.publish(a.url, b.url))
    old_b, old_a_default = tree(b.root), remotes.fetch(a, "pxelinux.cfg/default")
    change_overlay(remotes.site, "switch")
    built(remotes.site)
    wrapper = remotes.site / "ssh-wrapper"  # the operator's ssh: b's sshd killed at the switch
    wrapper.write_text(
        "#!/bin/sh\ncase \"$*\" in *srv-b*switch.sh*)\n"
        f"  for pid in $(ip netns pids {b.namespace}); do\n"
        "    [ \"$(cat /proc/$pid/comm)\" = sshd ] && kill $pid\n  done ;;\nesac\n"
        "exec ssh \"$@\"\n")
    wrapper.chmod(0o755)
    done = remotes.publish(a.url, b.url, TCBUILD_SSH=f"{wrapper} -F {remotes.ssh_config}")
    assert done.returncode == 1
    line, = done.stderr.splitlines()
    assert line.startswith(f"{b.url}: switching failed (ssh): "), line
    finish = line.split("finish it with `")[1].split("`")[0]
    assert finish.endswith("/switch.sh") and f" srv-b sh {b.root}/tcbuild/staging-" in finish
    assert tree(b.root) == old_b  # b still serves what it served; a switched
    assert remotes.fetch(a, "pxelinux.cfg/default") != old_a_default
    b.sshd = remotes.start_sshd(b, name="-again")
    finished = subprocess.run(["ip", "netns", "exec", remotes.ops, "sh", "-c",
                               finish.replace(str(wrapper), "ssh")], env=remotes.env(),
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert tree(a.root) == tree(b.root)
    assert not list((b.root / "tcbuild").glob("staging-*"))
    verify = remotes.tcbuild("verify", "--tftp", a.url, "--tftp", b.url)
    assert verify.returncode == 0, verify.stderr
