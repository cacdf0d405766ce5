"""`publish` with an inventory that has a discovery range writes `pxelinux.cfg/discovery` and its
iPXE twin: `default`'s image with `tcbuild.discover` on the kernel line. It switches and rolls
back with `default`, `verify --inventory` wants it there (and names it left behind when the range
is gone), and a publish without the range retires it."""

from __future__ import annotations

from pathlib import Path

from tcbuild.boot import ipxe
from tcbuild.boot.pxelinux import parse
from tcbuild.config.discovery import KERNEL_ARG
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.tftproot import releases as pub
from tcbuild.tftproot.verify import verify

from .test_publish import T0, publish_at, tcbuild

RANGE_LINE = 'discovery        = "10.1.1.200-10.1.1.250"\n'


def add_range(inventory: Path) -> None:
    text = inventory.read_text()
    inventory.write_text(text.replace("tftp_root ", RANGE_LINE + "tftp_root ", 1))


def test_publish_writes_the_discovery_config_and_rollback_moves_it(site: Path) -> None:
    inventory = site / "examples/cluster.toml"
    add_range(inventory)
    tftp = site / "tftp"
    first = publish_at(site, T0, inventory=True)
    assert "discovery" in first.configs
    default = parse((tftp / "pxelinux.cfg/default").read_text(), "default")
    found = parse((tftp / "pxelinux.cfg/discovery").read_text(), "discovery")
    mine, theirs = found.label(found.default), default.label(default.default)
    assert (mine.kernel, mine.initrd) == (theirs.kernel, theirs.initrd)
    assert mine.append == f"{theirs.append} {KERNEL_ARG}"
    assert [label.append for label in found.labels[1:]] == \
        [label.append for label in default.labels[1:]]  # the recipe's other labels unchanged
    twin = ipxe.parse((tftp / "ipxe/discovery.ipxe").read_text(), "discovery.ipxe")
    assert twin[found.default].append.endswith(f" {KERNEL_ARG}")
    assert verify(tftp, inventory=load_inventory(inventory)) == []

    (site / "overlays/gameserver/etc").mkdir()
    (site / "overlays/gameserver/etc/motd").write_text("second release\n")
    second = publish_at(site, T0 + 60, inventory=True)
    assert pub.current(tftp) == {second.release_id: {
        "default", "discovery", "01-52-54-00-12-34-57"}}
    rolled = tcbuild("rollback", "--tftp", tftp)
    assert rolled.returncode == 0, rolled.stderr
    assert pub.current(tftp) == {first.release_id: {
        "default", "discovery", "01-52-54-00-12-34-57"}}


def test_verify_wants_the_config_and_publish_retires_it(site: Path) -> None:
    inventory = site / "examples/cluster.toml"
    tftp = site / "tftp"
    publish_at(site, T0, inventory=True)
    plain = inventory.read_text()
    add_range(inventory)
    assert verify(tftp, inventory=load_inventory(inventory)) == [
        f"{tftp / 'pxelinux.cfg/discovery'}: missing ({inventory} has a discovery range: "
        "publish with --inventory writes it)"]
    publish_at(site, T0 + 60, inventory=True)
    assert (tftp / "pxelinux.cfg/discovery").is_file()

    inventory.write_text(plain)  # the range is gone
    assert verify(tftp, inventory=load_inventory(inventory)) == [
        f"{tftp / 'pxelinux.cfg/discovery'}: {inventory} has no discovery range (left behind: "
        "publish with --inventory retires it)"]
    last = publish_at(site, T0 + 120, inventory=True, keep=1)
    assert last.retire == ("discovery",)
    assert not (tftp / "pxelinux.cfg/discovery").exists()
    assert not (tftp / "ipxe/discovery.ipxe").exists()
    assert verify(tftp, inventory=load_inventory(inventory)) == []
