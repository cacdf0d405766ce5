"""The published example boots under UEFI (OVMF) and over HTTP (iPXE) too, from the same tree.

Three QEMU boots, each proving what the BIOS+TFTP boots of tests/test_pxe.py do not:
- UEFI over TFTP, as a host with its own config: syslinux.efi (bootx64.efi) reads the same
  pxelinux.cfg/01-<mac> as pxelinux.0;
- BIOS over HTTP after a rollback, as a host without a config: boot.ipxe falls back to the
  default script, which names the release rolled back to;
- UEFI over HTTP, as a host with its own config: boot.ipxe chains to its twin, and the EFI stub
  finds the initrd by the name on the kernel line.
Each prints its time; the README's boot table comes from these.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcbuild.tftproot import releases as pub

from .kit.nodekit import CANARY, OTHER, boot, booted_build, kernel_line, publish, tcbuild
from .kit.requires import require_ovmf


@pytest.fixture
def ovmf() -> None:
    require_ovmf()


def test_uefi_over_tftp_honours_the_per_mac_config(node: Path, ovmf: None) -> None:
    build_id = publish(node)
    done, log = boot(node, CANARY, firmware="uefi", via="tftp")
    assert booted_build(done, log) == build_id
    line = kernel_line(log)
    assert "loglevel=7" in line  # from pxelinux.cfg/01-<mac>, read by syslinux.efi
    assert f"BOOT_IMAGE={pub.RELEASES}/" in line  # syslinux's kernel line, not iPXE's
    print(done.stdout.strip())


def test_bios_over_http_follows_a_rollback(node: Path) -> None:
    old = publish(node)
    (node / "overlays/gameserver/etc").mkdir()
    (node / "overlays/gameserver/etc/motd").write_text("second release\n")
    new = publish(node)
    assert new != old
    assert tcbuild(node, "rollback", "--tftp", "tftp").returncode == 0
    done, log = boot(node, OTHER, via="http")
    assert booted_build(done, log) == old
    line = kernel_line(log)
    assert "initrd=core.hts.gz " in line and "loglevel=7" not in line  # the default script
    assert "BOOT_IMAGE" not in line
    print(done.stdout.strip())


def test_uefi_over_http_honours_the_per_mac_config(node: Path, ovmf: None) -> None:
    build_id = publish(node)
    done, log = boot(node, CANARY, firmware="uefi", via="http")
    assert booted_build(done, log) == build_id
    line = kernel_line(log)
    assert line.split("ommand line: ")[1].startswith("vmlinuz64 initrd=core.hts.gz ")
    assert "loglevel=7" in line
    assert "EFI stub: Loaded initrd from command line option" in log
    print(done.stdout.strip())
