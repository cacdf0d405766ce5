"""The boot server's files and the image's DHCP client, proven with the real daemons.

Syntax: `dhcpd -t` and `rsyslogd -N1` accept every generated config, and catch a broken value
that inventory validation never saw. Live (root; namespaces from tests/kit/netns.py): rsyslogd with
the generated rules files what nodes send through busybox `syslogd -R`, and what other senders
send (whatever name they claim) in the one place for unknown senders, where `tcbuild fleet`
never looks (dhcpd, Kea and dnsmasq serving the node's dhclient live:
tests/test_dhcp_servers.py). Nothing here touches the host's
hostname, resolver, /dev/log or network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tcbuild.bootserver.isc import dhcpd_conf
from tcbuild.bootserver.nfs import ganesha_conf
from tcbuild.bootserver.rsyslog import UNKNOWN_DIR, rsyslog_conf
from tcbuild.config.inventory import Inventory
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.errors import RecipeError

from .kit.clusterlab import nfs_null, start_ganesha
from .kit.dhcplab import recipe_inventory
from .kit.netns import Daemon, Lab, run, wait_for
from .kit.requires import require_tool


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return recipe_inventory()


def line_of(text: str, fragment: str) -> int:
    """The 1-based number of the only line of `text` containing `fragment`."""
    lines = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(lines) == 1, (fragment, lines)
    return lines[0]


# -- syntax: the daemons' own checks (no root needed) ---------------------------------------


@pytest.mark.parametrize(("domain", "http_url"), [(True, None), (False, None),
                                                 (True, "http://10.1.1.1/tree/")],
                         ids=["example", "no-domain", "http-boot"])
def test_dhcpd_accepts_the_generated_config(tmp_path: Path, inventory: Inventory,
                                            domain: bool, http_url: str | None) -> None:
    require_tool("dhcpd", "isc-dhcp-server")
    if not domain:  # host names then stand alone, and no domain-name option is sent
        inventory = replace(inventory, cluster=replace(inventory.cluster, domain=""))
    if http_url:  # iPXE clients get the script's URL, the others a program by architecture
        inventory = replace(inventory, cluster=replace(inventory.cluster, http_url=http_url))
    conf = tmp_path / "dhcpd.conf"
    conf.write_text(dhcpd_conf(inventory))
    result = run("dhcpd", "-t", "-cf", conf, check=False)
    assert result.returncode == 0, result.stderr
    assert f"Config file: {conf}" in result.stderr


def test_rsyslogd_accepts_the_generated_rules(tmp_path: Path, inventory: Inventory) -> None:
    require_tool("rsyslogd", "rsyslog")
    dropins = tmp_path / "rsyslog.d"
    dropins.mkdir()
    rules = dropins / "tcbuild.conf"
    rules.write_text(rsyslog_conf(inventory))
    alone = run("rsyslogd", "-N1", "-f", rules, check=False)
    assert alone.returncode == 0, alone.stderr
    assert "End of config validation run" in alone.stderr

    # As installed: a drop-in read by Debian's stock rsyslog.conf, which already loads
    # imuxsock and imklog. Only its include directory and work directory are moved here.
    stock = Path("/etc/rsyslog.conf").read_text()
    main = stock.replace("/etc/rsyslog.d/*.conf", f"{dropins}/*.conf")
    main = re.sub(r"^\$WorkDirectory .*$", f"$WorkDirectory {tmp_path}", main, flags=re.M)
    assert main != stock, "the stock rsyslog.conf has no $IncludeConfig /etc/rsyslog.d/*.conf"
    (tmp_path / "rsyslog.conf").write_text(main)
    composed = run("rsyslogd", "-N1", "-f", tmp_path / "rsyslog.conf", check=False)
    assert composed.returncode == 0, composed.stderr


def test_the_daemons_catch_a_value_validation_never_saw(tmp_path: Path,
                                                        inventory: Inventory) -> None:
    """No Inventory can hold these values (its types check them, however it is made); written
    into the generated text by hand, the daemon checks still stop them."""
    require_tool("dhcpd", "isc-dhcp-server")
    require_tool("rsyslogd", "rsyslog")

    # dhcpd: a typo in a MAC address.
    with pytest.raises(RecipeError, match="host.mac: '52:54:00:12:34:5g' is not a MAC address"):
        replace(inventory.hosts[1], mac="52:54:00:12:34:5g")
    mac = f"hardware ethernet {inventory.hosts[1].mac};"
    text = dhcpd_conf(inventory).replace(mac, "hardware ethernet 52:54:00:12:34:5g;")
    conf = tmp_path / "dhcpd.conf"
    conf.write_text(text)
    result = run("dhcpd", "-t", "-cf", conf, check=False)
    assert result.returncode == 1
    line = line_of(text, "hardware ethernet 52:54:00:12:34:5g;")
    assert f"{conf} line {line}: expecting numeric value." in result.stderr

    # rsyslog: a '%' in the log directory opens a property in the file-name template. It
    # passed validation until the daemon showed it; load_inventory now refuses it.
    odd = "/var/log/node%logs"
    toml = tmp_path / "cluster.toml"
    toml.write_text(inventory.path.read_text().replace("[cluster]\n",
                                                        f'[cluster]\nlog_dir = "{odd}"\n', 1))
    with pytest.raises(RecipeError, match=r"cluster\.log_dir: '/var/log/node%logs' is not"):
        load_inventory(toml)
    with pytest.raises(RecipeError, match=r"cluster\.log_dir: '/var/log/node%logs' is not"):
        replace(inventory.cluster, log_dir=odd)
    text = rsyslog_conf(inventory).replace(f'"{inventory.cluster.log_dir}/', f'"{odd}/')
    rules = tmp_path / "rsyslog-tcbuild.conf"
    rules.write_text(text)
    result = run("rsyslogd", "-N1", "-f", rules, check=False)
    assert result.returncode == 1
    # rsyslog names the line its parser had reached: the next statement after the template.
    found = re.search(rf"error during parsing file {re.escape(str(rules))}, on or before line "
                      rf"(\d+): invalid property 'logs/{UNKNOWN_DIR}/'", result.stderr)
    assert found, result.stderr
    line, reported = line_of(text, f'string="{odd}/'), int(found[1])
    between = text.splitlines()[line:reported - 1]
    assert line <= reported and all(not s.strip() or s.startswith("#") for s in between)


# -- live: network namespaces (root) ---------------------------------------------------------


def listening(daemon: Daemon, port: int) -> bool:
    """Whether the daemon's network namespace has a UDP socket and a listening TCP one on port."""

    def states(table: str) -> set[str]:
        rows = Path(f"/proc/{daemon.pid}/net/{table}").read_text().splitlines()[1:]
        return {fields[3] for fields in map(str.split, rows)
                if fields[1].endswith(f":{port:04X}")}

    return "07" in states("udp") and "0A" in states("tcp")


def test_live_syslog(tmp_path: Path, lab: Lab, inventory: Inventory) -> None:
    """busybox syslogd -R on each node -> rsyslogd with the generated rules: files per node,
    strangers apart; a stranger claiming a node's name changes nothing in `tcbuild fleet`."""
    require_tool("rsyslogd", "rsyslog")
    require_tool("busybox", "busybox-static")
    require_tool("logger", "bsdutils")
    logs = tmp_path / "remote"
    logs.mkdir()
    # Production rules; only the log directory is the test's (a value of the inventory).
    inventory = replace(inventory, cluster=replace(inventory.cluster, log_dir=str(logs)))
    c = inventory.cluster
    rules = tmp_path / "rsyslog-tcbuild.conf"
    rules.write_text(rsyslog_conf(inventory))

    prefix = c.internal_subnet.prefixlen
    loghost = lab.namespace("loghost")
    lab.bridge(loghost, f"{c.log_host}/{prefix}")
    rsyslogd = lab.start(loghost, "rsyslogd",
                         ["rsyslogd", "-n", "-f", rules, "-i", tmp_path / "rsyslogd.pid"])
    wait_for(lambda: listening(rsyslogd, c.syslog_port), "rsyslogd listening", watch=[rsyslogd])

    used = {h.ip for h in inventory.hosts} | {c.boot_server, c.internal_router, c.log_host}
    stranger = next(ip for ip in c.internal_subnet.hosts() if ip not in used)
    senders: dict[str, Daemon] = {}
    nodes: list[tuple[str, IPv4Address]] = [(h.name, h.ip) for h in inventory.hosts]
    for i, (name, ip) in enumerate([*nodes, ("stranger", stranger)]):
        namespace = lab.namespace(name)
        lab.link(loghost, f"port{i}", namespace, "eth1")
        lab.ip(loghost, "link", "set", f"port{i}", "master", "br0")
        lab.ip(namespace, "addr", "add", f"{ip}/{prefix}", "dev", "eth1")
        # As bootlocal.sh starts it: forward everything to the log host, no hostname sent.
        forward = f"{c.log_host}:{c.syslog_port}"
        senders[name] = lab.start(namespace, f"syslogd-{name}",
                                  ["busybox", "syslogd", "-n", "-R", forward])
    for sender in senders.values():
        wait_for(sender.path("/dev/log").is_socket, f"{sender.name}'s /dev/log", watch=[sender])

    def logger(name: str, *args: str) -> str:
        """Log as a program on that node does; returns the message."""
        message = f"{name} {args[-1]} ({os.getpid()})"
        run("nsenter", "--target", str(senders[name].pid), "--mount", "--net",
            "logger", *args[:-1], message)
        return message

    game, one, two = c.game_log_tag, inventory.hosts[0].name, inventory.hosts[1].name
    err1 = logger(one, "-t", game, "-p", "local0.err", "game error")
    info1 = logger(one, "-t", game, "-p", "local0.info", "game notice")
    boot1 = logger(one, "-t", "bootlocal", "-p", "local0.err", "boot error")
    err2 = logger(two, "-t", game, "-p", "local0.err", "game error")
    # Over TCP, straight to rsyslogd, carrying this machine's hostname: still filed by address.
    tcp2 = logger(two, "-T", "-n", str(c.log_host), "-P", str(c.syslog_port),
                  "-t", game, "-p", "local0.crit", "game crash over tcp")
    other = logger("stranger", "-t", game, "-p", "local0.err", "game error")

    def datagram(text: str) -> None:
        """A raw UDP datagram from the stranger's address: it writes any header it likes."""
        run("nsenter", "--target", str(senders["stranger"].pid), "--net", sys.executable, "-c",
            "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto("
            "sys.argv[1].encode(), (sys.argv[2], int(sys.argv[3])))", text, str(c.log_host),
            str(c.syslog_port))

    # A stranger's message names any hostname it likes: it must not steer the file out of
    # log_dir (RFC 5424 allows '/' in a hostname; logger cannot send one, so a raw datagram).
    hostile = f"hostile ({os.getpid()})"
    datagram(f"<131>1 2026-01-01T00:00:00Z ../escaped {game} - - - {hostile}")
    expected = {
        f"{one}.log": [err1, info1, boot1],
        f"{one}-err.log": [err1],  # the game server's errors only
        f"{two}.log": [err2, tcp2],
        f"{two}-err.log": [err2, tcp2],
        UNKNOWN_DIR: [other, hostile],  # every other sender, one file per day
    }

    def text_of(name: str) -> str:
        path = logs / name
        if path.is_dir():
            return "".join(p.read_text() for p in sorted(path.iterdir()))
        return path.read_text() if path.is_file() else ""

    def delivered() -> bool:
        return all(all(m in text_of(name) for m in msgs) for name, msgs in expected.items())

    wait_for(delivered, "every message in its files", watch=[rsyslogd])
    assert sorted(p.name for p in logs.iterdir()) == sorted(expected)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d\.log", p.name)
               for p in (logs / UNKNOWN_DIR).iterdir())
    assert not (tmp_path / "escaped.log").exists()
    everything = [info1, boot1, err1, err2, tcp2, other, hostile]
    for name, messages in expected.items():
        text = text_of(name)
        assert [m for m in everything if m in text] == [m for m in everything if m in messages]
    # Each line: the receive time, the address it came from, the sender's tag and message.
    (line,) = [t for t in text_of(f"{one}-err.log").splitlines() if err1 in t]
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{{1,6}})?[+-]\d\d:\d\d "
                        rf"{re.escape(str(inventory.hosts[0].ip))} {game}: {re.escape(err1)}", line)

    # A stranger claims to be node one (RFC 3164 header, its hostname and tag) and says it
    # booted a build, then plants an error as one-err: all of it lands with the strangers,
    # and the fleet view is what it was.
    def view() -> str:
        done = subprocess.run([sys.executable, "-m", "tcbuild", "fleet", "--inventory",
                               str(inventory.path), "--logs", str(logs), "--json"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        return done.stdout

    before = view()
    assert json.loads(before)["hosts"][0]["name"] == one
    spoofed = [f"game-server node, build 222222222222, release spoofed-{os.getpid()}",
               f"planted error ({os.getpid()})"]
    datagram(f"<133>Nov 30 09:00:00 {one} bootlocal: {spoofed[0]}, kernel 6.1.0")
    datagram(f"<131>Nov 30 09:00:01 {one}-err {game}: {spoofed[1]}")
    expected[UNKNOWN_DIR] += spoofed
    wait_for(delivered, "the spoofed lines with the strangers'", watch=[rsyslogd])
    assert not any(m in text_of(name) for m in spoofed for name in expected
                   if name != UNKNOWN_DIR)
    assert sorted(p.name for p in logs.iterdir()) == sorted(expected)
    assert view() == before


def test_live_ganesha(tmp_path: Path, lab: Lab, inventory: Inventory) -> None:
    """NFS-Ganesha runs the generated ganesha.conf and answers NFSv4 on the boot server."""
    require_tool("ganesha.nfsd", "nfs-ganesha nfs-ganesha-vfs")
    c = inventory.cluster
    conf = tmp_path / "ganesha.conf"
    conf.write_text(ganesha_conf(inventory))
    share = tmp_path / "share"
    share.mkdir()
    run_dirs = sorted(p.name for p in Path("/run").iterdir())

    server, node = lab.namespace("nfs"), lab.namespace("node")
    lab.link(server, "int0", node, "eth1")
    prefix = c.internal_subnet.prefixlen
    lab.ip(server, "addr", "add", f"{c.nfs_server}/{prefix}", "dev", "int0")
    lab.ip(node, "addr", "add", f"{inventory.hosts[0].ip}/{prefix}", "dev", "eth1")
    ganesha = start_ganesha(lab, server, conf, share, c.nfs_export)
    assert nfs_null(lab, node, str(c.nfs_server)) == (1, 0, 0)  # a reply, accepted, success
    assert "Configuration file successfully parsed" in (lab.workdir / "ganesha.out").read_text()
    assert ganesha.process.poll() is None
    assert sorted(p.name for p in Path("/run").iterdir()) == run_dirs  # its run files stayed in
