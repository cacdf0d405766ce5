"""Boot a published TFTP root under QEMU, headless, and watch its console.

QEMU's user-mode network has its own DHCP and TFTP server, so no root, daemon or real network
is needed. The run passes when the expected text appears, and fails as soon as a known failure
does (firmware, pxelinux or kernel), not at the timeout. QEMU is always stopped by its pid.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import TcbuildError

QEMU = "qemu-system-x86_64"
DEFAULT_MAC = "52:54:00:12:34:56"  # QEMU's own default for the first NIC
FAILURES = (
    "Kernel panic", "not syncing",  # the kernel
    "Unable to locate configuration file", "Failed to load", "Boot failed",  # pxelinux
    "failed: No such file or directory",  # pxelinux: a KERNEL or INITRD it cannot load
    "No more network devices", "No bootable device", "Could not boot",  # firmware
)
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x08\r]")


@dataclass(frozen=True)
class BootResult:
    ok: bool
    reason: str
    seconds: float
    log: Path
    tail: str


def judge(text: str, expect: str, failures: Sequence[str] = FAILURES) -> tuple[bool, str] | None:
    """(True, why) once `expect` shows, (False, why) on a failure; whichever comes first.

    The kernel's echo of its command line is ignored, so text given in APPEND cannot match.
    """
    clean = CONTROL.sub("", text)
    body = "".join(line for line in clean.splitlines(keepends=True)
                   if "command line" not in line.lower())
    hits = []
    at = body.find(expect)
    if at >= 0:
        hits.append((at, True, f"found {expect!r}"))
    for failure in failures:
        at = body.find(failure)
        if at >= 0:
            start, end = body.rfind("\n", 0, at) + 1, body.find("\n", at)
            hits.append((at, False, body[start : end if end >= 0 else None].strip()))
    return min(hits)[1:] if hits else None


def watch(command: Sequence[str], log: Path, expect: str, timeout: float,
          failures: Sequence[str] = FAILURES, console_to_log: bool = True) -> BootResult:
    """Run QEMU, read its console log until `expect`, a failure, its exit or the timeout.

    With `console_to_log` QEMU's stdout (serial and firmware console) is the log; otherwise
    the command writes the log itself (e.g. `-serial file:LOG`) and stdout goes beside it.
    """
    if shutil.which(command[0]) is None:
        raise TcbuildError(f"{command[0]} is not installed (apt-get install qemu-system-x86)")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    sink = log if console_to_log else log.with_name(log.name + ".qemu")
    started = time.monotonic()
    with sink.open("wb") as out:
        proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        while True:
            text = log.read_text(errors="replace") if log.exists() else ""
            verdict = judge(text[: text.rfind("\n") + 1], expect, failures)  # whole lines
            if verdict is None and proc.poll() is not None:
                text = log.read_text(errors="replace") if log.exists() else ""
                verdict = judge(text, expect, failures) or (
                    False, f"qemu exited with status {proc.returncode} before {expect!r}")
            if verdict is None and time.monotonic() - started > timeout:
                verdict = (False, f"timeout: {expect!r} not seen in {timeout:g} s")
            if verdict is not None:
                break
            time.sleep(0.1)
    finally:
        _stop(proc)
    tail = "\n".join(CONTROL.sub("", text).splitlines()[-30:])
    return BootResult(verdict[0], verdict[1], time.monotonic() - started, log, tail)


def pxe_command(tftp: Path, mac: str = DEFAULT_MAC, memory_mb: int = 256) -> list[str]:
    """QEMU PXE-booting `tftp` over its user-mode network, console on stdout."""
    return [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-nographic", "-monitor", "none",
            "-no-reboot", "-boot", "n",
            "-netdev", f"user,id=n0,tftp={tftp.resolve()},bootfile=pxelinux.0",
            "-device", f"e1000,netdev=n0,mac={mac}"]


def pxe_boot(tftp: Path, log: Path, expect: str, mac: str = DEFAULT_MAC,
             timeout: float = 120) -> BootResult:
    """PXE-boot a TFTP root as the machine with `mac` would."""
    if not tftp.is_dir():
        raise TcbuildError(f"{tftp}: the TFTP root does not exist")
    return watch(pxe_command(tftp, mac), log, expect, timeout)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
