"""The `tcbuild` command line's grammar: every command, its arguments and options. No behaviour.

`cli` runs what it parses. `--quiet` and `--json` are given to exactly the commands that honour
them (tests/test_api.py checks the table).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..bootserver.files import Dhcp
from ..config.recipe import CheckPolicy, OutputMode
from ..fleet.boottest import DEFAULT_MAC, Firmware, Via
from ..formats.compress import Compression
from ..version import __version__


class Parser(argparse.ArgumentParser):
    """A bad argument is one line (`tcbuild publish: argument --wait: ...`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def seconds(text: str) -> float:
    """A time to wait: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds >= 0")
    return value


class Once(argparse.Action):
    """An option a command takes once: given twice it is bad input, not the last one wins."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option: str | None = None) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"argument {option}: given twice (this command takes one)")
        setattr(namespace, self.dest, values)


def parser() -> argparse.ArgumentParser:
    """The `tcbuild` command line; each command's name is `command` in the parsed arguments."""
    parser = Parser(
        prog="tcbuild", description="Build and publish network-boot images for Tiny Core Linux."
    )
    parser.add_argument("--version", action="version", version=f"tcbuild {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.set_defaults(debug=False)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    tftp_root = Parser(add_help=False)
    tftp_root.add_argument("--tftp", type=Path, required=True, metavar="DIR", action=Once,
                           help="the TFTP root")
    tftp_roots = Parser(add_help=False)
    tftp_roots.add_argument("--tftp", required=True, action="append", metavar="DIR|URL",
                            help="the TFTP root, a directory or ssh://[user@]host[:port]/path "
                                 "(repeatable: boot servers that serve one tree)")
    json_output = Parser(add_help=False)
    json_output.add_argument("--json", action="store_true", help="print the result as JSON")
    quiet = Parser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true", help="no progress bar or report")
    mirror_options = Parser(add_help=False)
    group = mirror_options.add_argument_group("mirror and cache")
    group.add_argument("--mirror", action="append", metavar="URL",
                       help="mirror base URL (repeatable; replaces the recipe's list)")
    group.add_argument("--cache", type=Path, metavar="DIR",
                       help="download cache (default: ~/.cache/tcbuild)")
    group.add_argument("--offline", action="store_true",
                       help="use the cache only; name whatever is missing")
    group.add_argument("--refresh", action="store_true",
                       help="check the cache against the mirror's current checksums")
    group.add_argument("--locked", action="store_true",
                       help="fail unless the inputs are exactly those of the recipe's lock file")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
    recipe_options = Parser(add_help=False, parents=[mirror_options])
    recipe_options.add_argument("recipe", type=Path)

    def command(name: str, text: str, *parents: Parser
                ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=list(parents), help=text)
        sub.set_defaults(command=name)
        return sub

    recipe_json = (recipe_options, json_output)
    command("deps", "print the resolved extension dependency tree", *recipe_json)
    command("fetch", "download, verify and cache everything a recipe names",
            *recipe_json, quiet)
    command("lock", "write RECIPE.lock: the sha256 of every input", recipe_options,
            quiet)

    build_cmd = command("build", "build the kernel and initrd (and build.json)",
                        *recipe_json, quiet)
    build_cmd.add_argument("--out", type=Path, metavar="DIR",
                           help="output directory (default: build/<recipe name>)")
    build_cmd.add_argument("--compression", choices=[c.value for c in Compression],
                           help="small (default: as small as advdef -z4) or fast (for iterating)")
    build_cmd.add_argument("--fast", dest="compression", action="store_const", const="fast",
                           help="same as --compression fast")
    build_cmd.add_argument("--output", choices=[o.value for o in OutputMode],
                           help="repack (default) or append (the untouched base + one segment)")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build_cmd.add_argument("--check", choices=[c.value for c in CheckPolicy],
                           help="the will-it-run check: warn, error or off (default: the "
                                "recipe's [image] check, else warn)")

    iso_cmd = command("iso", "build, then write a bootable ISO (a CD or a USB stick)",
                      *recipe_json, quiet)
    iso_cmd.add_argument("-o", "--out", type=Path, metavar="FILE",
                         help="the ISO file (default: build/<recipe name>/<recipe name>.iso)")
    iso_cmd.add_argument("--bootloader-dir", type=Path, metavar="DIR",
                         help="where isolinux.bin and ldlinux.c32 are (default: Debian's)")

    inspect = command("inspect", "list an image's entries with provenance", json_output)
    inspect.add_argument("image", type=Path, help="a build directory or an initramfs file")

    releasing = Parser(add_help=False)  # publish's and rollout's: a release into the tree
    releasing.add_argument("--bootloader-dir", type=Path, metavar="DIR",
                           help="where pxelinux.0 and ldlinux.c32 are (default: Debian's)")
    releasing.add_argument("--out", type=Path, metavar="DIR",
                           help="where the image is built (default: build/<recipe name>)")
    releasing.add_argument("--wait", type=seconds, default=30.0, metavar="S",
                           help="how long to wait for another publish holding the tree "
                                "(default 30 s)")

    publish_cmd = command("publish", "build and publish into a TFTP root, atomically",
                          *recipe_json, tftp_roots, quiet, releasing)
    publish_cmd.add_argument("--inventory", type=Path, metavar="FILE",
                             help="hosts whose group boots another recipe or boot line")
    publish_cmd.add_argument("--keep", type=int, default=5, metavar="N",
                             help="releases to keep (never the current or previous one)")
    publish_cmd.add_argument("--dry-run", action="store_true", help="show what would change")
    publish_cmd.add_argument("--force", action="store_true",
                             help="a new release even if the tree already serves this build")

    rollout_cmd = command("rollout", "roll a new image out in waves, each proven healthy from "
                          "the log host; a failed wave switched back", mirror_options, tftp_roots,
                          releasing)
    rollout_cmd.add_argument("recipe", type=Path, nargs="?",
                             help="the recipe (not with --resume or --abort)")
    rollout_cmd.add_argument("--inventory", type=Path, metavar="FILE",
                             help="the hosts, their groups and the log directory")
    rollout_cmd.add_argument("--logs", type=Path, metavar="DIR",
                             help="the per-node log files (default: the inventory's log_dir)")
    state = rollout_cmd.add_mutually_exclusive_group()
    state.add_argument("--resume", action="store_true",
                       help="continue the rollout recorded in the tree")
    state.add_argument("--abort", action="store_true",
                       help="undo the rollout recorded in the tree")
    rollout_cmd.add_argument("--waves", default="1,25%,100%", metavar="LIST",
                             help="cumulative wave sizes, counts or percentages "
                                  "(default: 1,25%%,100%%)")
    rollout_cmd.add_argument("--canary", metavar="HOST", help="the host of the first wave")
    rollout_cmd.add_argument("--healthy-for", type=float, default=60.0, metavar="S",
                             help="how long a host must stay healthy (default 60 s)")
    rollout_cmd.add_argument("--boot-timeout", type=float, default=600.0, metavar="S",
                             help="how long to wait for a host to be back and healthy "
                                  "(default 600 s)")
    rollout_cmd.add_argument("--drain-command", metavar="TEMPLATE",
                             help="run before a host is power-cycled, retried until it exits 0 "
                                  "({name}, {mac}, {ip})")
    rollout_cmd.add_argument("--drain-timeout", type=float, default=600.0, metavar="S",
                             help="how long to retry the drain command (default 600 s)")
    rollout_cmd.add_argument("--keep-done", action="store_true",
                             help="a failed wave reverts its own hosts only")
    rollout_cmd.add_argument("--manual-reboot", action="store_true",
                             help="print whom to reboot instead of power-cycling")
    rollout_cmd.add_argument("--poll", type=float, default=2.0, metavar="S",
                             help="seconds between looks at the logs (default 2)")
    rollout_cmd.add_argument("--dry-run", action="store_true",
                             help="print the waves and each host's steps; change nothing")

    command("releases", "list the releases of a TFTP root (or of several, and what they "
            "disagree on)", tftp_roots, json_output)
    rollback_cmd = command("rollback", "boot the previous (or a given) release",
                           tftp_roots)
    rollback_cmd.add_argument("release", nargs="?", help="release id (default: the previous)")
    rollback_cmd.add_argument("--wait", type=seconds, default=30.0, metavar="S",
                              help="how long to wait for a publish (default 30 s)")
    verify_cmd = command("verify", "check a published TFTP root (or several that serve one "
                         "tree)", tftp_roots, json_output)
    verify_cmd.add_argument("--inventory", type=Path, metavar="FILE",
                            help="also name each per-MAC config that no host has")

    boot_cmd = command("boot-test", "network-boot a published tree under QEMU", tftp_root,
                       json_output)
    boot_cmd.add_argument("--firmware", choices=[f.value for f in Firmware],
                          default="bios", help="SeaBIOS or OVMF (default: bios)")
    boot_cmd.add_argument("--via", choices=[v.value for v in Via], default="tftp",
                          help="TFTP, or HTTP through iPXE and boot.ipxe (default: tftp)")
    boot_cmd.add_argument("--mac", default=DEFAULT_MAC,
                          help=f"the booting NIC's MAC (default {DEFAULT_MAC})")
    boot_cmd.add_argument("--expect", default="login:", metavar="TEXT",
                          help="console text that means success (default: login:)")
    boot_cmd.add_argument("--timeout", type=float, default=120.0, metavar="S")
    boot_cmd.add_argument("--log", type=Path, default=Path("build/boot-test.log"), metavar="FILE",
                          help="where the console goes (default: build/boot-test.log)")

    command("doctor", "which external tools and files are here", json_output)

    server = command("server-config", "write the boot server's DHCP, rsyslog, NFS, TFTP files")
    server.add_argument("inventory", type=Path)
    server.add_argument("--out", type=Path, metavar="DIR", default=Path("build/server"),
                        help="where to write them (default: build/server)")
    server.add_argument("--check", action="store_true",
                        help="compare with the files in --out, show a diff, write nothing")
    server.add_argument("--dhcp", action="append", choices=[d.value for d in Dhcp],
                        help="the DHCP server to write configs for (repeatable; default: all)")

    seen = Parser(add_help=False)  # where fleet (and enroll --all-new) read what nodes did
    seen.add_argument("--logs", type=Path, metavar="DIR",
                      help="the log host's files (default: the inventory's log_dir)")
    seen.add_argument("--leases", type=Path, action="append", metavar="FILE",
                      help="the DHCP server's lease file (dhcpd.leases, Kea's memfile or "
                           "dnsmasq.leases; repeatable; default: Debian's places): a new "
                           "machine counts when it bears out its report")

    fleet_cmd = command("fleet", "which build and release each node booted, from the "
                        "log host's files", json_output, seen)
    fleet_cmd.add_argument("--inventory", type=Path, required=True, metavar="FILE")
    fleet_cmd.add_argument("--tftp", metavar="DIR|URL",
                           help="the TFTP root (a directory or ssh://[user@]host[:port]/path): "
                                "compare with the release each node's config names")
    fleet_cmd.add_argument("--serve", metavar="[ADDR:]PORT",
                           help="serve the fleet as a page, /api/fleet and /metrics, kept "
                                "current, until SIGINT or SIGTERM (ADDR: 127.0.0.1 unless "
                                "given; another address exposes it to that network)")

    power_cmd = command("power", "a host's power through its BMC (IPMI) or power_command",
                        json_output)
    power_cmd.add_argument("action", choices=["status", "on", "off", "cycle"])
    power_cmd.add_argument("hosts", nargs="+", metavar="HOST", help="inventory host names")
    power_cmd.add_argument("--inventory", type=Path, required=True, metavar="FILE")

    live = Parser(add_help=False)
    places = live.add_argument_group("--apply: where the daemons' files are (Debian's defaults)")
    places.add_argument("--apply", choices=[d.value for d in Dhcp], metavar="DHCP",
                        help="put the new configs live on this boot server, which runs DHCP "
                             "(isc, kea or dnsmasq), and rsyslog")
    places.add_argument("--no-rsyslog", action="store_true",
                        help="with --apply: leave rsyslog's rules alone")
    places.add_argument("--kea-conf", type=Path, metavar="FILE")
    places.add_argument("--kea-socket", type=Path, metavar="PATH",
                        help="Kea's control socket (default: the generated config's)")
    places.add_argument("--kea-leases", type=Path, metavar="FILE",
                        help="Kea's lease file (default: the generated config's)")
    places.add_argument("--kea-standby", action="store_true",
                        help="of a Kea pair, this machine is the standby")
    places.add_argument("--dnsmasq-hosts", type=Path, metavar="FILE")
    places.add_argument("--dnsmasq-opts", type=Path, metavar="FILE")
    places.add_argument("--dnsmasq-pid", type=Path, metavar="FILE")
    places.add_argument("--dhcpd-conf", type=Path, metavar="FILE")
    places.add_argument("--dhcpd-restart", metavar="COMMAND",
                        help="how to restart dhcpd (default: systemctl restart isc-dhcp-server)")
    places.add_argument("--rsyslog-conf", type=Path, metavar="FILE")
    places.add_argument("--rsyslog-restart", metavar="COMMAND",
                        help="how to restart rsyslog (default: systemctl restart rsyslog)")
    places.add_argument("--tftp", type=Path, action="append", default=[], metavar="DIR",
                        help="a TFTP root: write (or remove) the host's per-MAC config "
                             "(repeatable)")

    enroll_cmd = command("enroll", "add a machine to the inventory (and the live configs)",
                         live, json_output, seen)
    enroll_cmd.add_argument("mac", nargs="?", help="the MAC of its PXE-booting NIC")
    enroll_cmd.add_argument("--all-new", action="store_true",
                            help="every machine `tcbuild fleet` lists as new, in one write "
                                 "(read with --logs and --leases, as fleet reads them)")
    enroll_cmd.add_argument("--inventory", type=Path, required=True, metavar="FILE")
    enroll_cmd.add_argument("--name", help="its name (default: the next of name_pattern)")
    enroll_cmd.add_argument("--ip", help="its internal address (default: the next free one)")
    enroll_cmd.add_argument("--second-ip", help="its public address (default: the next free)")
    enroll_cmd.add_argument("--group", help="its inventory group (with --all-new: theirs)")
    enroll_cmd.add_argument("--bmc", help="its BMC, like ipmi://10.1.2.5")
    enroll_cmd.add_argument("--bmc-user", help="the BMC's user (default: [cluster]'s)")
    enroll_cmd.add_argument("--bmc-password-file", metavar="FILE",
                            help="the file with the BMC's password (default: [cluster]'s)")
    enroll_cmd.add_argument("--no-power", action="store_true",
                            help="with --tftp: do not power-cycle it")
    retire_cmd = command("retire", "remove a host from the inventory (and the live configs); "
                         "its logs stay", live, json_output)
    retire_cmd.add_argument("name", help="the host's inventory name")
    retire_cmd.add_argument("--inventory", type=Path, required=True, metavar="FILE")

    check_cmd = command("check", "will it run? libraries, interpreters, kernel and "
                        "modules of an image", mirror_options, quiet, json_output)
    check_cmd.add_argument("image", type=Path, help="a build directory or an initrd")
    check_cmd.add_argument("--kernel", type=Path, metavar="FILE",
                           help="the kernel (default: the build directory's)")
    check_cmd.add_argument("--recipe", type=Path, metavar="RECIPE",
                           help="whose exceptions and mirror (provides.db) to use "
                                "(default: the build's, if it is still there)")
    check_cmd.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                           help="an image path (glob) whose findings are deliberate")

    diff_cmd = command("diff", "what changed between two builds or images", json_output)
    diff_cmd.add_argument("old", type=Path)
    diff_cmd.add_argument("new", type=Path)
    return parser
