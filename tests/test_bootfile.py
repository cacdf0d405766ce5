"""The boot-file rules every DHCP config is written from."""

from __future__ import annotations

from tcbuild.boot.bootfile import (
    BOOTX64_EFI,
    DEFAULT,
    PXELINUX,
    BootRule,
    Client,
    boot_file,
    boot_rules,
)


def test_without_http_url_the_architectures_decide() -> None:
    assert boot_rules(None) == (BootRule(Client.UEFI_X64, (7, 9), BOOTX64_EFI),
                                BootRule(Client.BIOS, (0,), PXELINUX))
    assert boot_file(Client.BIOS, None) == PXELINUX == DEFAULT
    assert boot_file(Client.UEFI_X64, None) == "bootx64.efi"
    assert boot_file(Client.IPXE, None) == DEFAULT  # iPXE loads pxelinux.0 as any BIOS ROM


def test_ipxe_gets_the_script_url_first() -> None:
    rules = boot_rules("http://10.1.1.1/tree/")
    assert rules[0] == BootRule(Client.IPXE, (), "http://10.1.1.1/tree/boot.ipxe")
    assert [r.client for r in rules] == [Client.IPXE, Client.UEFI_X64, Client.BIOS]
    assert boot_file(Client.IPXE, "http://10.1.1.1/tree/") == "http://10.1.1.1/tree/boot.ipxe"
