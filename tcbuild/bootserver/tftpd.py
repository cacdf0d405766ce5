"""tftpd-hpa's defaults and the boot server's hosts lines; pure text."""

from __future__ import annotations

from ..config.inventory import Inventory
from .generated import header


def tftpd_hpa(inventory: Inventory) -> str:
    """`/etc/default/tftpd-hpa`: serve the TFTP root, chrooted, on the boot server's address
    (on every address when two boot servers share the file, each with its own)."""
    c = inventory.cluster
    address = str(c.boot_server) if len(c.boot_servers) == 1 else ""
    return (header(inventory)
            + 'TFTP_USERNAME="tftp"\n'
            + f'TFTP_DIRECTORY="{c.tftp_root}"\n'
            + f'TFTP_ADDRESS="{address}:69"\n'
            + 'TFTP_OPTIONS="--secure"\n')


def hosts(inventory: Inventory) -> str:
    """Lines for the boot server's `/etc/hosts`: log files and tools then show node names."""
    domain = inventory.cluster.domain
    rows = [f"{h.ip}\t{h.fqdn(domain)} {h.name}" if domain else f"{h.ip}\t{h.name}"
            for h in inventory.hosts]
    return header(inventory) + "".join(f"{row}\n" for row in rows)
