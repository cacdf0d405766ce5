"""A real BMC for the power tests: OpenIPMI's `ipmi_sim` serving IPMI over LAN (RMCP+) on
127.0.0.1, its "machine" a small long-running process (`startcmd`) that counts its starts, so
power on, off and cycle can be seen from outside (docs: ../shared notes, bmc.md)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

USER, PASSWORD = "admin", "secret"
LAN_CONF = """name "{name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial kcs 127.0.0.1 {serial} codec VM
  startcmd "{node}"
  startnow true
  poweroff_wait 2
  kill_wait 2
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""
"""One BMC (ipmi_sim's lan.conf, as bmc.md checked it): LAN on 127.0.0.1:{port}, the KCS
serial line on {serial} (power commands need it, a VM or not), {node} started on power-on."""
EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""
NODE = """#!/bin/sh
echo start >> {dir}/starts
echo $$ > {dir}/pid
exec sleep 1000
"""


def free_port(kind: int) -> int:
    """A port the kernel just handed out on 127.0.0.1 (UDP for the LAN, TCP for the serial)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimBmc:
    """`with SimBmc(dir) as bmc:` one BMC on 127.0.0.1:`bmc.port`, its machine powered on."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port(socket.SOCK_DGRAM)
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ipmi://127.0.0.1:{self.port}"

    @property
    def starts(self) -> int:
        """How often the machine was started (power on, cycle, and at the BMC's start)."""
        path = self.root / "starts"
        return len(path.read_text().split()) if path.exists() else 0

    def running(self) -> bool:
        """Whether the machine's process is alive (the BMC's power state, seen from outside)."""
        pid = self._machine_pid()
        if pid is None:
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def wait_for(self, test: object, timeout: float = 10.0) -> bool:
        """Poll `test()` until true or `timeout` seconds."""
        assert callable(test)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if test():
                return True
            time.sleep(0.05)
        return bool(test())

    def ipmitool(self, *command: str, password: str = PASSWORD) -> str:
        """The operator's client, straight to this BMC: the cross-check."""
        done = subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p",
                               str(self.port), "-U", USER, "-P", password, *command],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    def __enter__(self) -> SimBmc:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "state").mkdir(exist_ok=True)
        node = self.root / "node.sh"
        node.write_text(NODE.format(dir=self.root))
        node.chmod(0o755)
        serial = free_port(socket.SOCK_STREAM)
        (self.root / "bmc.emu").write_text(EMU)
        (self.root / "lan.conf").write_text(LAN_CONF.format(
            name="p22bmc", port=self.port, serial=serial, node=node, user=USER,
            password=PASSWORD))
        self.log = (self.root / "sim.log").open("wb")  # noqa: SIM115 (closed in __exit__)
        self.process = subprocess.Popen(
            ["ipmi_sim", "-c", str(self.root / "lan.conf"), "-f", str(self.root / "bmc.emu"),
             "-n", "-s", str(self.root / "state")], stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT)
        if not self.wait_for(lambda: self.ipmitool("chassis", "power", "status")
                             == "Chassis Power is on" and self.running()):
            self.__exit__(None, None, None)
            raise RuntimeError(f"ipmi_sim did not start: {(self.root / 'sim.log').read_text()}")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        if self.log is not None:
            self.log.close()
        pid = self._machine_pid()
        if pid is not None and self.running():  # ipmi_sim leaves its machine behind
            os.kill(pid, signal.SIGKILL)

    def _machine_pid(self) -> int | None:
        path = self.root / "pid"
        return int(path.read_text()) if path.exists() and path.read_text().strip() else None
