"""A stand-in node for rollout tests without QEMU: power-cycling it "boots" the release its
pxelinux config names in the TFTP root (per-MAC, else `default`, as pxelinux looks them up) and
writes what the log host would receive into the node's log files, in the log host's format:
bootlocal's boot line (`game-server node, build X, release Y`), then a line from the game
server's tag, or, for a bad build, the game server's error (in both files, as rsyslog files it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from tcbuild.config.inventory import Host, log_names
from tcbuild.fleet.overview import pxe_release
from tcbuild.tftproot.state import RELEASES, Release


def line(ip: str, tag: str, message: str) -> str:
    """A line as the generated rsyslog rules write it, received now."""
    return f"{datetime.now(UTC).isoformat(timespec='microseconds')} {ip} {tag}: {message}\n"


class FakeNodes:
    """The power control of stand-in nodes; `cycled` lists the power-cycles in order."""

    def __init__(self, tftp: Path, logs: Path, bad: Sequence[str] = (), game_tag: str = "master",
                 no_power: Sequence[str] = (), hang: Sequence[str] = ()) -> None:
        self.tftp, self.logs, self.bad, self.game_tag = tftp, logs, set(bad), game_tag
        self.no_power, self.hang = set(no_power), set(hang)
        self.cycled: list[str] = []

    def missing(self, hosts: Sequence[Host]) -> list[str]:
        return [h.name for h in hosts if h.name in self.no_power]

    def cycle(self, host: Host) -> None:
        self.cycled.append(host.name)
        if host.name in self.hang:  # a BMC that never answers (to kill the rollout meanwhile)
            time.sleep(3600)
        self.boot(host)

    def boot(self, host: Host) -> str:
        """Boot what the tree names for the host; the build booted."""
        named = pxe_release(self.tftp, host, {})
        assert named is not None and named.release is not None
        release = Release.read(self.tftp / RELEASES / named.release)
        build = release.build_id[:12]
        ip = str(host.ip)
        main, errors = (self.logs / name for name in log_names(host.name))
        with main.open("a") as f:
            f.write(line(ip, "bootlocal", f"game-server node, build {build}, release "
                                          f"{release.id}, kernel 6.1.0"))
            if build in self.bad:
                error = line(ip, self.game_tag, "fatal: cannot load libgame.so")
                f.write(error)
                with errors.open("a") as e:
                    e.write(error)
            else:
                f.write(line(ip, self.game_tag, "server started, 0 players"))
        return build


def main(argv: list[str]) -> int:
    """As a site's `power_command`: `fakenode.py TFTP LOGS INVENTORY BAD_BUILDS {action} {name}`
    (BAD_BUILDS: comma-separated short build ids, or -)."""
    from tcbuild.config.inventoryfile import load_inventory

    tftp, logs, inventory, bad, action, name = argv
    nodes = FakeNodes(Path(tftp), Path(logs), [] if bad == "-" else bad.split(","))
    host = next(h for h in load_inventory(inventory).hosts if h.name == name)
    with (Path(logs) / "power.log").open("a") as f:
        f.write(f"{action} {name}\n")
    if action == "cycle":
        nodes.boot(host)
    elif action == "status":
        print("on")
    return 0


if __name__ == "__main__":  # python -m tests.kit.fakenode, with the worktree first on the path
    import sys

    sys.exit(main(sys.argv[1:]))
