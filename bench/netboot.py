"""Boot time by path: BIOS and UEFI firmware, over TFTP and over HTTP, and the ISO as a CD and
as a USB stick; the same published image everywhere, under QEMU (TCG, no KVM).

    python bench/netboot.py [--reps N] [--work DIR]

It builds the stand-in mirror of `make demo` (Debian's kernel and busybox-static), publishes the
example recipe with its inventory into a TFTP root, writes the recipe's ISO, then boots each path
as a host without its own config and times it from QEMU's start to the node's marker (its
bootlocal.sh printing its build id). One boot at a time: each takes a whole core. Medians over
--reps repetitions, interleaved. It prints a markdown table and writes it to
build/bench/netboot.md. Times include the firmware's own waits (SeaBIOS, OVMF, iPXE's DHCP).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tcbuild.fleet import boottest  # noqa: E402
from tcbuild.fleet.boottest import Firmware, Medium, Via  # noqa: E402
from tests.kit.bootkit import DEFAULT_KERNEL_CACHE, build_boot_mirror, debian_kernel  # noqa: E402
from tests.kit.mirrortree import MirrorServer  # noqa: E402

MARKER = "bootlocal: game-server node, build "
MAC = "52:54:00:aa:bb:01"  # not in the inventory: the default config
NETWORK = [(f, v) for v in Via for f in Firmware]
ISO = [(f, m) for m in Medium for f in Firmware]


def tcbuild(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tcbuild", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def prepare(work: Path) -> tuple[Path, Path]:
    """The published tree and the ISO of the example recipe."""
    kit = debian_kernel(DEFAULT_KERNEL_CACHE)
    mirror_root = work / "mirror"
    if not (mirror_root / "15.x").is_dir():
        build_boot_mirror(mirror_root, kit)
    tftp, iso = work / "tftp", work / "gameserver.iso"
    tftp.mkdir(parents=True, exist_ok=True)
    with MirrorServer(mirror_root) as mirror:
        common = ["--mirror", mirror.url, "--cache", str(work / "cache"), "-q"]
        tcbuild("publish", "recipes/gameserver.toml", "--tftp", str(tftp), "--inventory",
                "examples/cluster.toml", "--out", str(work / "gameserver"), *common)
        tcbuild("iso", "recipes/gameserver.toml", "-o", str(iso), *common)  # build/gameserver
    return tftp, iso


def boot_network(tftp: Path, logs: Path, firmware: Firmware, via: Via) -> float:
    result = boottest.pxe_boot(tftp, logs / f"{firmware}-{via}.log", MARKER, MAC, 180,
                               firmware, via)
    if not result.ok:
        sys.exit(f"{firmware} over {via}: {result.reason}\n{result.tail}")
    return result.seconds


def boot_iso(iso: Path, logs: Path, firmware: Firmware, medium: Medium) -> float:
    log = (logs / f"iso-{firmware}-{medium}.log").absolute()
    result = boottest.watch(boottest.iso_command(iso, log, medium, firmware), log, MARKER, 180,
                            console_to_log=False)
    if not result.ok:
        sys.exit(f"ISO, {firmware} {medium}: {result.reason}\n{result.tail}")
    return result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "build/bench/netboot")
    args = parser.parse_args()
    work = args.work.resolve()
    tftp, iso = prepare(work)
    logs = work / "logs"
    times: dict[str, list[float]] = {}
    for _ in range(args.reps):
        for firmware, via in NETWORK:
            times.setdefault(f"{firmware} over {via}", []).append(
                boot_network(tftp, logs, firmware, via))
        for firmware, medium in ISO:
            times.setdefault(f"ISO, {firmware} {medium}", []).append(
                boot_iso(iso, logs, firmware, medium))
    kernel = next(tftp.glob("tcbuild/releases/*/vmlinuz64")).stat().st_size
    initrd = next(tftp.glob("tcbuild/releases/*/core.hts.gz")).stat().st_size
    lines = [f"Kernel {kernel / 2**20:.1f} MiB + initrd {initrd / 2**20:.1f} MiB, QEMU TCG, "
             f"median of {args.reps}, seconds from QEMU's start to the node's marker:", "",
             "| path | seconds |", "|---|---:|"]
    lines += [f"| {name} | {statistics.median(values):.1f} |" for name, values in times.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "build/bench/netboot.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
