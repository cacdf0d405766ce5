"""The published example node: publish it, boot-test it, read what its console printed.

The example's /opt/bootlocal.sh prints its build id first thing, so a boot says which release
came up (tests/test_pxe.py, tests/test_bootserver_e2e.py; the `node` fixture is in conftest).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MARKER = "bootlocal: game-server node, build "
CANARY = "52:54:00:12:34:57"  # server2 in examples/cluster.toml, group canary (loglevel=7)
OTHER = "52:54:00:aa:bb:01"  # not in the inventory: boots `default`
BUILD_ID = re.compile(re.escape(MARKER) + r"([0-9a-f]+)")


def tcbuild(node: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *args], cwd=node,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # this tree's tcbuild


def publish(node: Path) -> str:
    """`tcbuild publish` of the example with its inventory; the build id it published."""
    done = tcbuild(node, "publish", "recipes/gameserver.toml", "--tftp", "tftp", "--inventory",
                   "examples/cluster.toml", "--cache", "cache", "-q")
    assert done.returncode == 0, done.stderr
    checked = tcbuild(node, "verify", "--tftp", "tftp")  # every publish is verified
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return built_id(node)


def built_id(node: Path) -> str:
    """The short build id (as the image prints it) of the last build."""
    return json.loads((node / "build/gameserver/build.json").read_text())["build_id"][:12]


def boot(node: Path, mac: str, expect: str = MARKER, name: str = "boot",
         firmware: str = "bios", via: str = "tftp"
         ) -> tuple[subprocess.CompletedProcess[str], str]:
    """`tcbuild boot-test` as the machine with `mac`; the result and its console log."""
    log = node / f"{name}.log"
    done = tcbuild(node, "boot-test", "--tftp", "tftp", "--mac", mac, "--expect", expect,
                   "--timeout", "120", "--log", str(log), "--firmware", firmware, "--via", via)
    return done, log.read_text(errors="replace")


def booted_build(done: subprocess.CompletedProcess[str], log: str) -> str:
    assert done.returncode == 0, f"{done.stdout}{done.stderr}"
    found = BUILD_ID.search(log)
    assert found, log[-2000:]
    return found[1]


def kernel_line(log: str) -> str:
    return next(line for line in log.splitlines() if "Kernel command line:" in line)
