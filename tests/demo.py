"""`make demo`: the whole pipeline on a machine without internet, ending in a PXE boot.

It builds a STAND-IN Tiny Core mirror (Debian's kernel and busybox-static, laid out like the
real mirror, with stand-in extensions), serves it on loopback, then runs the operator's
commands on the example recipe: build, publish into build/tftpboot, verify, boot-test. The
node PXE-boots under QEMU and its console is shown. Only Debian's package archive is used
(once, for the kernel); everything else is local.

    python -m tests.demo [--tftp DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from .bootkit import DEFAULT_KERNEL_CACHE, build_boot_mirror, debian_kernel
from .mirrortree import MirrorServer

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "recipes/gameserver.toml"
INVENTORY = "examples/cluster.toml"
MARKER = "bootlocal: game-server node, build"
SHOWN = ("tc-init:", "tc-ext:", "bootlocal:", "PXELINUX", "Loading tcbuild/")


def run(*args: str) -> None:
    """Run a tcbuild command as an operator would, echoing it; stop the demo if it fails."""
    print(f"\n$ tcbuild {shlex.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "tcbuild", *args], cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(f"demo: `tcbuild {args[0]}` failed (exit status {done.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tftp", type=Path, default=ROOT / "build/tftpboot")
    parser.add_argument("--work", type=Path, default=ROOT / "build/demo")
    args = parser.parse_args()
    work, tftp = args.work.resolve(), args.tftp.resolve()

    print("== tcbuild demo: STAND-IN mirror (Debian's kernel + busybox-static), not Tiny Core's")
    kit = debian_kernel(DEFAULT_KERNEL_CACHE)
    print(f"kernel {kit.version} from Debian's linux-image package "
          f"(cached in {DEFAULT_KERNEL_CACHE})")
    mirror_root = work / "mirror"
    if not (mirror_root / "15.x").is_dir():
        build_boot_mirror(mirror_root, kit)
    print(f"stand-in mirror: {mirror_root}")
    tftp.mkdir(parents=True, exist_ok=True)
    with MirrorServer(mirror_root) as mirror:
        print(f"served at {mirror.url} (loopback only)")
        common = ["--mirror", mirror.url, "--cache", str(work / "cache")]
        run("build", RECIPE, *common, "--out", str(work / "gameserver"))
        run("publish", RECIPE, "--tftp", str(tftp), "--inventory", INVENTORY, *common,
            "--out", str(work / "gameserver"))
    run("verify", "--tftp", str(tftp))
    run("releases", "--tftp", str(tftp))
    log = work / "console.log"
    try:
        run("boot-test", "--tftp", str(tftp), "--expect", MARKER, "--log", str(log))
    finally:
        if log.exists():
            print(f"\n-- the node's console ({log}), boot steps only --")
            for line in log.read_text(errors="replace").splitlines():
                if line.strip().startswith(SHOWN) or "] Linux version" in line:
                    print(f"   {line.strip()}")
    print(f"\nThe tree in {tftp} is what a TFTP server would serve (`tcbuild server-config "
          f"{INVENTORY}` writes the boot server's side).\nAgainst the real mirror: make image")


if __name__ == "__main__":
    main()
