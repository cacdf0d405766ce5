"""The example's own dhclient-script, run for real: busybox sh in a network namespace (and a UTS
namespace for the hostname) with the environment ISC dhclient gives it, busybox's tools only
(its syslogd on the namespace's own /dev/log), and the image's exit hook as tcbuild renders
it. (tests/test_dhcp_servers.py runs it under the real dhclient against each DHCP server.)"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from .kit.dhcplab import DHCLIENT_SCRIPT, render_image_files
from .kit.netns import Lab
from .kit.requires import require_tool

HOOK = "/usr/local/etc/dhclient-exit-hooks"
APPLETS = ("sh", "ip", "ifconfig", "route", "hostname", "sed", "awk", "grep", "tr", "head",
           "cat", "pidof", "mv", "kill", "env", "logger", "syslogd", "sleep")
LEASE = {"new_ip_address": "10.1.1.5", "new_subnet_mask": "255.255.255.0",
         "new_broadcast_address": "10.1.1.255", "new_routers": "10.1.1.1",
         "new_host_name": "server1.example.com.", "new_second_ip": "172.16.1.5",
         "new_domain_name": "example.com", "new_domain_name_servers": "10.1.1.1 10.1.1.2"}


def toolbox(workdir: Path) -> Path:
    """A directory of busybox's applets: the node's PATH."""
    require_tool("busybox", "busybox-static")
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    for applet in APPLETS:
        (bin_dir / applet).symlink_to(shutil.which("busybox") or "busybox")
    return bin_dir


def events(script: Path, bin_dir: Path, *runs: tuple[str, dict[str, str]]) -> str:
    """Shell lines running the script once per event, as dhclient does: `env -i`, its
    variables only (and a PATH of busybox's applets); each prints its exit status. A busybox
    syslogd in the namespace (its /dev/log is the namespace's own) writes what they log to
    `syslog` beside `bin`, and is stopped by its pid at the end."""
    log = shlex.quote(str(bin_dir.parent / "syslog"))
    lines = [f"{bin_dir}/syslogd -n -O {log} & syslogd=$!",
             "trap 'kill $syslogd' EXIT",
             "while [ ! -S /dev/log ]; do sleep 0.05; done"]
    for reason, lease in runs:
        env = {"PATH": str(bin_dir), "reason": reason, "interface": "eth1", **lease}
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        lines.append(f"env -i {assignments} {bin_dir}/sh {shlex.quote(str(script))}; "
                     f'echo "{reason} exit $?"')
    return "\n".join(lines)


def addresses(lab: Lab, namespace: str) -> dict[str, list[str]]:
    return {link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]]
            for link in json.loads(lab.ip(namespace, "-j", "-4", "addr", "show"))}


def default_routes(lab: Lab, namespace: str) -> list[tuple[str, str, int | None]]:
    return [(r["gateway"], r["dev"], r.get("metric"))
            for r in json.loads(lab.ip(namespace, "-j", "-4", "route", "show", "default"))]


def test_the_example_dhclient_script_configures_the_node_and_runs_the_exit_hook(
    tmp_path: Path, lab: Lab
) -> None:
    image = render_image_files(tmp_path / "image")
    script = image[DHCLIENT_SCRIPT]
    assert script.read_bytes().startswith(b"#!/bin/sh\n") and script.stat().st_mode & 0o111
    bin_dir = toolbox(tmp_path)
    node, lan, public = lab.namespace("d21-node"), lab.namespace("d21-lan"), lab.namespace(
        "d21-pub")
    lab.link(lan, "d21-lan0", node, "eth1")
    lab.link(public, "d21-pub0", node, "eth0")
    lab.ip(lan, "addr", "add", "10.1.1.1/24", "dev", "d21-lan0")
    lab.ip(public, "addr", "add", "172.16.1.1/16", "dev", "d21-pub0")
    lab.ip(node, "link", "set", "eth1", "down")
    nrpe = tmp_path / "nrpe.ran"
    q = shlex.quote
    setup = f"""
        hostname box
        mkdir -p /usr/local/etc/nagios /usr/local/sbin
        cp {q(str(image[HOOK]))} {HOOK}
        echo server_address=127.0.0.1 > /usr/local/etc/nagios/nrpe.cfg
        printf '#!{bin_dir}/sh\\necho "$*" >{q(str(nrpe))}\\n' > /usr/local/sbin/nrpe
        chmod 755 /usr/local/sbin/nrpe
        rm -f /etc/resolv.conf
    """
    after = ("echo hostname=$(hostname); cat /etc/resolv.conf; "
             "cat /usr/local/etc/nagios/nrpe.cfg")
    first = lab.start(node, "d21-bound", [
        "sh", "-c", events(script, bin_dir, ("PREINIT", {}), ("BOUND", LEASE)) + "\n" + after],
        uts=True, private=["/etc", "/usr/local"], setup=setup)
    assert first.process.wait(timeout=30) == 0, first.output()
    out = first.output()
    assert "PREINIT exit 0\nBOUND exit 0\n" in out, out
    assert "hostname=server1.example.com\n" in out  # the trailing dot dropped
    assert "search example.com\nnameserver 10.1.1.1\nnameserver 10.1.1.2\n" in out
    assert "server_address=10.1.1.5\n" in out  # the exit hook bound NRPE to the address
    assert nrpe.read_text() == "-c /usr/local/etc/nagios/nrpe.cfg -d\n"  # and started it

    # The address from the script, the public one and the default route from the exit hook,
    # which replaced the script's route through the internal router.
    assert addresses(lab, node) == {"lo": ["127.0.0.1/8"], "eth1": ["10.1.1.5/24"],
                                    "eth0": ["172.16.1.5/16"]}
    assert default_routes(lab, node) == [("172.16.1.1", "eth0", None)]
    log = (tmp_path / "syslog").read_text()
    assert ("dhclient-script: BOUND: eth1 has 10.1.1.5 netmask 255.255.255.0, routers 10.1.1.1"
            in log)
    assert "dhclient-script: hostname server1.example.com" in log
    assert "dhclient-exit-hook: removed a default route through eth1" in log  # the script's
    assert "dhclient-exit-hook: BOUND on eth1: address 10.1.1.5, second-ip 172.16.1.5" in log

    # dhclient restarted (a new process knows no old lease): REBOOT with the same lease leaves
    # the same state.
    again = lab.start(node, "d21-reboot", ["sh", "-c", events(script, bin_dir, ("REBOOT", LEASE))],
                      uts=True, private=["/etc", "/usr/local"], setup=setup)
    assert again.process.wait(timeout=30) == 0, again.output()
    assert "REBOOT exit 0\n" in again.output()
    assert addresses(lab, node)["eth1"] == ["10.1.1.5/24"]
    assert default_routes(lab, node) == [("172.16.1.1", "eth0", None)]

    # RENEW with the same lease changes nothing; EXPIRE takes the address away; TIMEOUT (no
    # earlier lease to try) fails.
    old = {k.replace("new_", "old_"): v for k, v in LEASE.items()}
    second = lab.start(node, "d21-expire", ["sh", "-c", events(
        script, bin_dir, ("RENEW", {**LEASE, **old}), ("EXPIRE", old), ("TIMEOUT", {}))],
        uts=True, private=["/etc", "/usr/local"], setup=setup)
    assert second.process.wait(timeout=30) == 0, second.output()
    assert "RENEW exit 0\nEXPIRE exit 0\nTIMEOUT exit 1\n" in second.output()
    assert addresses(lab, node).get("eth1", []) == []
    assert "dhclient-script: EXPIRE on eth1: 10.1.1.5 removed" in (tmp_path / "syslog").read_text()

    # Without any exit hook: the script alone sets the address, a route per router (the first
    # preferred) and the hostname.
    third = lab.start(node, "d21-alone", ["sh", "-c", events(
        script, bin_dir, ("REBOOT", {**LEASE, "new_routers": "10.1.1.1 10.1.1.2"}))
        + "\necho hostname=$(hostname)"], uts=True, private=["/etc", "/usr/local"],
        setup=f"hostname box\nrm -f {HOOK}")
    assert third.process.wait(timeout=30) == 0, third.output()
    assert "REBOOT exit 0\nhostname=server1.example.com\n" in third.output()
    assert addresses(lab, node)["eth1"] == ["10.1.1.5/24"]
    assert set(default_routes(lab, node)) == {("172.16.1.1", "eth0", None),
                                              ("10.1.1.1", "eth1", None), ("10.1.1.2", "eth1", 1)}
