"""`tcbuild boot-test`: the console judge, and a real PXE boot under QEMU that must fail fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tcbuild.fleet.boottest import judge

from .kit.requires import require_tool

ROOT = Path(__file__).resolve().parent.parent


def test_judge_takes_whichever_comes_first() -> None:
    assert judge("booting\n", "READY") is None
    assert judge("x\nREADY\n", "READY") == (True, "found 'READY'")
    assert judge("[    0.0] Kernel command line: console=ttyS0 READY\n", "READY") is None
    panic = "[ 1.6] Kernel panic - not syncing: VFS: Unable to mount root fs"
    assert judge(f"{panic}\nREADY\n", "READY") == (False, panic)
    assert judge("READY\nBoot failed\n", "READY") == (True, "found 'READY'")
    missing = "Loading tcbuild/releases/x/core.hts.gz failed: No such file or directory"
    assert judge(f"\x1b[2J{missing}\r\n", "READY") == (False, missing)
    assert judge("Unable to locate configuration file\n", "READY") == (
        False, "Unable to locate configuration file")


@pytest.mark.qemu
def test_a_tree_without_bootloader_fails_fast(tmp_path: Path) -> None:
    require_tool("qemu-system-x86_64", "qemu-system-x86")
    tftp = tmp_path / "tftp"
    (tftp / "pxelinux.cfg").mkdir(parents=True)
    (tftp / "pxelinux.cfg/default").write_text("DEFAULT x\nLABEL x\n KERNEL k\n INITRD i\n")
    result = subprocess.run(
        [sys.executable, "-m", "tcbuild", "boot-test", "--tftp", str(tftp), "--timeout", "90",
         "--log", str(tmp_path / "console.log"), "--expect", "never printed"],
        cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{tftp}: boot failed after ")
    assert first.endswith(": No more network devices"), first
    seconds = float(first.split("after ")[1].split(" s")[0])
    assert seconds < 30  # seconds, not the 90 s timeout
    assert "pxelinux.0... No such file or directory" in (
        tmp_path / "console.log.firmware").read_text()


def test_watch_judges_whole_lines_only(tmp_path: Path) -> None:
    """A failure line still being written is not cut short in the reason."""
    from tcbuild.fleet.boottest import watch

    script = ("import sys, time; sys.stdout.write('Kernel panic - not'); sys.stdout.flush();"
              " time.sleep(0.5); print(' syncing: gone'); sys.stdout.flush(); time.sleep(30)")
    result = watch([sys.executable, "-c", script], tmp_path / "log", "never", timeout=20)
    assert (result.ok, result.reason) == (False, "Kernel panic - not syncing: gone")
    assert result.seconds < 10
