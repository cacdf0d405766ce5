"""The NFS share: kernel nfsd's exports and NFS-Ganesha's ganesha.conf; pure text."""

from __future__ import annotations

from ..config.inventory import Inventory
from .generated import header


def exports(inventory: Inventory) -> str:
    c = inventory.cluster
    return (header(inventory)
            + f"{c.nfs_export} {c.nfs_clients}({c.nfs_export_options})\n")


# exports(5) options that decide who may do what; the others (sync, no_subtree_check, ...) are
# kernel nfsd matters with no Ganesha counterpart.
GANESHA_ACCESS = {"ro": "RO", "rw": "RW"}
GANESHA_SQUASH = {"root_squash": "Root_Squash", "no_root_squash": "No_Root_Squash",
                  "all_squash": "All_Squash"}


def ganesha_conf(inventory: Inventory) -> str:
    """NFS-Ganesha (FSAL VFS): the same export as `exports`, over NFSv4 and TCP only.

    Access and squashing follow the inventory's export options (exports' defaults: read-only,
    root squashed). NFSv4 alone needs neither rpcbind nor mountd. No grace period: the share
    holds no client state worth recovering, and a node that boots while the server restarts
    should not wait 90 s to open the game server.
    """
    c = inventory.cluster
    options = c.nfs_export_options.split(",")
    access = next((GANESHA_ACCESS[o] for o in reversed(options) if o in GANESHA_ACCESS), "RO")
    squash = next((GANESHA_SQUASH[o] for o in reversed(options) if o in GANESHA_SQUASH),
                  "Root_Squash")
    return (header(inventory) + f"""
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = 2049;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}

NFSV4 {{
    Graceless = true;
}}

EXPORT {{
    Export_Id = 1;
    Path = {c.nfs_export};
    Pseudo = {c.nfs_export};
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    Squash = {squash};
    Access_Type = None;          # nobody, but the clients below
    FSAL {{
        Name = VFS;
    }}
    CLIENT {{
        Clients = {c.nfs_clients};
        Protocols = 4;
        Access_Type = {access};
    }}
}}
""")
