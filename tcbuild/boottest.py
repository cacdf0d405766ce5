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


def judge(text: str, expect: str | None, failures: Sequence[str] = FAILURES
          ) -> tuple[bool, str] | None:
    """(True, why) once `expect` shows, (False, why) on a failure; whichever comes first.

    The kernel's echo of its command line is ignored, so text given in APPEND cannot match.
    With `expect` None only failures count.
    """
    clean = CONTROL.sub("", text)
    body = "".join(line for line in clean.splitlines(keepends=True)
                   if "command line" not in line.lower())
    hits = []
    at = body.find(expect) if expect is not None else -1
    if at >= 0:
        hits.append((at, True, f"found {expect!r}"))
    for failure in failures:
        at = body.find(failure)
        if at >= 0:
            start, end = body.rfind("\n", 0, at) + 1, body.find("\n", at)
            hits.append((at, False, body[start : end if end >= 0 else None].strip()))
    return min(hits)[1:] if hits else None


def watch(command: Sequence[str], log: Path, expect: str, timeout: float,
          failures: Sequence[str] = FAILURES, console_to_log: bool = True,
          firmware: Path | None = None) -> BootResult:
    """Run QEMU, read its console log until `expect`, a failure, its exit or the timeout.

    With `console_to_log` QEMU's stdout is the log; otherwise the command writes the log
    itself (e.g. `-serial file:LOG`) and stdout goes beside it. `firmware`, if given, is a
    second log the command writes (the firmware's console), watched for failures only.
    """
    if shutil.which(command[0]) is None:
        raise TcbuildError(f"{command[0]} is not installed (apt-get install qemu-system-x86)")
    log.parent.mkdir(parents=True, exist_ok=True)
    logs = [log, *([firmware] if firmware else [])]
    for path in logs:
        path.unlink(missing_ok=True)
    sink = log if console_to_log else log.with_name(log.name + ".qemu")
    started = time.monotonic()
    with sink.open("wb") as out:
        proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        while True:
            exited = proc.poll() is not None
            verdict, seen = _judge_logs(logs, expect, failures, whole_lines=not exited)
            if verdict is None and exited:
                verdict = (False, f"qemu exited with status {proc.returncode} before {expect!r}")
            if verdict is None and time.monotonic() - started > timeout:
                verdict = (False, f"timeout: {expect!r} not seen in {timeout:g} s")
            if verdict is not None:
                break
            time.sleep(0.1)
    finally:
        _stop(proc)
    tail = "\n".join(CONTROL.sub("", _read(seen)).splitlines()[-30:])
    return BootResult(verdict[0], verdict[1], time.monotonic() - started, seen, tail)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _judge_logs(logs: Sequence[Path], expect: str, failures: Sequence[str], whole_lines: bool
                ) -> tuple[tuple[bool, str] | None, Path]:
    """The verdict of the first log that has one (the console first), and that log."""
    for n, path in enumerate(logs):
        text = _read(path)
        if whole_lines:  # a line still being written is judged once it is complete
            text = text[: text.rfind("\n") + 1]
        verdict = judge(text, expect if n == 0 else None, failures)
        if verdict is not None:
            return verdict, path
    return None, logs[0]


def firmware_log(log: Path) -> Path:
    """Where a PXE boot's firmware console goes, beside the node's console `log`."""
    return log.with_name(log.name + ".firmware")


def pxe_command(tftp: Path, log: Path, mac: str = DEFAULT_MAC, memory_mb: int = 256,
                netdev: str | None = None) -> list[str]:
    """QEMU PXE-booting `tftp` over its user-mode network, headless.

    `netdev`, if given, replaces that network: a `-netdev` value with `id=n0` (e.g. a tap
    device reaching real DHCP and TFTP servers; `tftp` is then not used).
    The node's serial console (COM1: pxelinux's SERIAL, the kernel's ttyS0) goes to `log`.
    The firmware's screen (SeaBIOS, iPXE, pxelinux before it reads a config) is redirected
    to COM2 and `firmware_log(log)`: on one port the two would interleave character by
    character wherever pxelinux writes to both.
    """
    com = "isa-serial,chardev={0},iobase={1},irq={2}"
    return [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-display", "none", "-vga", "none",
            "-nodefaults", "-monitor", "none", "-no-reboot", "-boot", "n",
            "-netdev", netdev or f"user,id=n0,tftp={tftp.resolve()},bootfile=pxelinux.0",
            "-device", f"e1000,netdev=n0,mac={mac}",
            "-chardev", f"file,id=com1,path={_qemu_path(log)}",
            "-device", com.format("com1", "0x3f8", 4),
            "-chardev", f"file,id=com2,path={_qemu_path(firmware_log(log))}",
            "-device", com.format("com2", "0x2f8", 3),
            "-fw_cfg", f"name=etc/sercon-port,file={_qemu_path(_sercon_file(log))}"]


def _qemu_path(path: Path) -> str:
    path = path.absolute()
    if "," in str(path):
        raise TcbuildError(f"{path}: QEMU cannot take a path with a comma")
    return str(path)


def _sercon_file(log: Path) -> Path:
    """Beside `log`, a file holding 0x2f8 (COM2), little-endian: SeaBIOS's serial console port."""
    path = log.with_name(log.name + ".sercon")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xf8\x02")
    return path


def pxe_boot(tftp: Path, log: Path, expect: str, mac: str = DEFAULT_MAC,
             timeout: float = 120) -> BootResult:
    """PXE-boot a TFTP root as the machine with `mac` would."""
    if not tftp.is_dir():
        raise TcbuildError(f"{tftp}: the TFTP root does not exist")
    log = log.absolute()
    return watch(pxe_command(tftp, log, mac), log, expect, timeout, console_to_log=False,
                 firmware=firmware_log(log))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
