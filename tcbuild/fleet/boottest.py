"""Boot a published tree under QEMU, headless, and watch its console.

QEMU's user-mode network has its own DHCP and TFTP server, so no root, daemon or real network
is needed. Firmware: SeaBIOS (BIOS), or OVMF (x64 UEFI) with a fresh copy of its variable store
per run (a reused one keeps a changed boot order). Transport: TFTP (the NIC's boot ROM fetches
pxelinux.0 or bootx64.efi), or HTTP (the tree served on loopback, which the guest reaches as
10.0.2.2; QEMU's NIC ROM is iPXE, and boots boot.ipxe). The run passes when the expected text
appears, and fails as soon as a known failure does (firmware, bootloader or kernel), not at the
timeout. QEMU is always stopped by its pid.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..boot.bootfile import BOOTX64_EFI, IPXE_SCRIPT, PXELINUX
from ..errors import TcbuildError, boundary

QEMU = "qemu-system-x86_64"
DEFAULT_MAC = "52:54:00:12:34:56"  # QEMU's own default for the first NIC
FAILURES = (
    "Kernel panic", "not syncing",  # the kernel
    "Unable to locate configuration file", "Failed to load", "Boot failed",  # pxelinux
    "failed: No such file or directory",  # pxelinux: a KERNEL or INITRD it cannot load
    "No more network devices", "No bootable device", "Could not boot",  # firmware
    "No bootable option or device was found",  # OVMF, every boot option failed
)
CONTROL = re.compile(r"\x1b\[[0-9;?=]*[A-Za-z]|[\x08\r]")
GUEST_HOST = "10.0.2.2"  # the host's loopback, seen from QEMU's user-mode network
OVMF = (  # (code, variable store template) pairs of Debian's ovmf, the preferred first
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
)


class Firmware(StrEnum):
    BIOS = "bios"  # SeaBIOS, QEMU's default
    UEFI = "uefi"  # OVMF

    @property
    def network_loader(self) -> str:
        """The file the NIC's boot ROM fetches over TFTP."""
        return BOOTX64_EFI if self is Firmware.UEFI else PXELINUX


class Via(StrEnum):
    TFTP = "tftp"
    HTTP = "http"


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
        stop(proc)
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
                netdev: str | None = None, firmware: Firmware = Firmware.BIOS,
                bootfile: str | None = None, external: tuple[str, str] | None = None
                ) -> list[str]:
    """QEMU network-booting `tftp` over its user-mode network, headless.

    `bootfile` is what its DHCP hands out: by default the firmware's loader over TFTP; an
    http:// URL boots through the NIC's iPXE ROM. `netdev`, if given, replaces that network:
    a `-netdev` value with `id=n0` (e.g. a tap device reaching real DHCP and TFTP servers;
    `tftp` and `bootfile` are then not used).
    `external`, if given, is a second NIC (a `-netdev` value with `id=ext`, and its MAC) placed
    before the booting one, so the node sees it as eth0 and the booting NIC as eth1, like the
    seed's nodes; it has no boot ROM, so the firmware boots from the other.
    The node's serial console (COM1: the loader's SERIAL, the kernel's ttyS0) goes to `log`.
    Under BIOS the firmware's screen (SeaBIOS, iPXE, pxelinux before it reads a config) is
    redirected to COM2 and `firmware_log(log)`: on one port the two would interleave
    character by character wherever pxelinux writes to both. OVMF writes to COM1 only.
    """
    bootfile = bootfile or firmware.network_loader
    tftp_arg = "" if bootfile.startswith("http://") else f"tftp={tftp.resolve()},"
    command = [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-display", "none", "-vga", "none",
               "-nodefaults", "-monitor", "none", "-no-reboot",
               "-netdev", netdev or f"user,id=n0,{tftp_arg}bootfile={bootfile}",
               "-chardev", f"file,id=com1,path={_qemu_path(log)}",
               "-device", _COM.format("com1", "0x3f8", 4)]
    if external:
        command += ["-netdev", external[0], "-device",
                    f"e1000,netdev=ext,mac={external[1]},romfile="]
    if firmware is Firmware.UEFI:
        return [*command, *uefi_args(log), "-device", f"e1000,netdev=n0,mac={mac},bootindex=1"]
    return [*command, "-boot", "n", "-device", f"e1000,netdev=n0,mac={mac}",
            "-chardev", f"file,id=com2,path={_qemu_path(firmware_log(log))}",
            "-device", _COM.format("com2", "0x2f8", 3),
            "-fw_cfg", f"name=etc/sercon-port,file={_qemu_path(_sercon_file(log))}"]


_COM = "isa-serial,chardev={0},iobase={1},irq={2}"


def find_ovmf() -> tuple[Path, Path]:
    """OVMF's code and variable store template (Debian's ovmf); one line if missing."""
    for code, variables in OVMF:
        if Path(code).is_file() and Path(variables).is_file():
            return Path(code), Path(variables)
    raise TcbuildError(f"OVMF not found ({OVMF[0][0]}): apt-get install ovmf")


def uefi_args(log: Path) -> list[str]:
    """OVMF as two flash drives: its code read-only, and a fresh copy of the variable store
    beside `log` (a store kept from an earlier run may hold another boot order)."""
    code, template = find_ovmf()
    variables = log.with_name(log.name + ".vars.fd")
    variables.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, variables)
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_qemu_path(code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={_qemu_path(variables)}"]


class Medium(StrEnum):
    CD = "cd"
    USB = "usb"  # a USB stick (EHCI): the image as a disk, booted through its MBR or GPT


def iso_command(iso: Path, log: Path, medium: Medium, firmware: Firmware = Firmware.BIOS,
                memory_mb: int = 256) -> list[str]:
    """QEMU booting an ISO image as a CD or a USB stick, headless, the console to `log`."""
    drive = {
        Medium.CD: ["-drive", f"if=none,id=cd,media=cdrom,readonly=on,file={_qemu_path(iso)}",
                    "-device", "ide-cd,drive=cd,bootindex=1"],
        Medium.USB: ["-drive", f"if=none,id=stick,format=raw,readonly=on,file={_qemu_path(iso)}",
                     "-device", "usb-ehci,id=ehci",
                     "-device", "usb-storage,bus=ehci.0,drive=stick,bootindex=1"],
    }[medium]
    uefi = uefi_args(log) if firmware is Firmware.UEFI else []
    return [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-display", "none", "-vga", "none",
            "-nodefaults", "-no-reboot", "-monitor", "none", "-serial",
            f"file:{_qemu_path(log)}", *uefi, *drive]


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


@boundary
def pxe_boot(tftp: Path, log: Path, expect: str, mac: str = DEFAULT_MAC,
             timeout: float = 120, firmware: Firmware = Firmware.BIOS,
             via: Via = Via.TFTP) -> BootResult:
    """Network-boot a published tree as the machine with `mac` would, with that firmware,
    over that transport (HTTP: the tree served on loopback while it boots)."""
    if not tftp.is_dir():
        raise TcbuildError(f"{tftp}: the TFTP root does not exist")
    log = log.absolute()
    second = firmware_log(log) if firmware is Firmware.BIOS else None
    if via is Via.TFTP:
        return watch(pxe_command(tftp, log, mac, firmware=firmware), log, expect, timeout,
                     console_to_log=False, firmware=second)
    from .httptree import TreeServer

    with TreeServer(tftp) as server:
        url = f"http://{GUEST_HOST}:{server.port}/{IPXE_SCRIPT}"
        return watch(pxe_command(tftp, log, mac, firmware=firmware, bootfile=url), log,
                     expect, timeout, console_to_log=False, firmware=second)


def stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate a process started here (killed after 5 s), and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
