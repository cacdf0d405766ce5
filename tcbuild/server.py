"""The boot server's configuration, generated from an inventory: pure text, no I/O.

dhcpd (fixed addresses by MAC, option 187 `second-ip`; Kea and dnsmasq alike in `kea` and
`dnsmasq`), rsyslog (per-host files and the game
server's local0 errors, matched by sender address because busybox syslogd forwards without a
hostname), the NFS share (kernel nfsd's exports and NFS-Ganesha's ganesha.conf), tftpd-hpa
defaults and a hosts file. Deterministic and diff-friendly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from enum import StrEnum

from .bootfile import ARCH_OPTION, DEFAULT, IPXE_USER_CLASS, Client, boot_rules
from .dnsmasq import dnsmasq_files
from .errors import boundary
from .generated import header
from .inventory import Inventory
from .kea import kea_files

FILE_FORMAT = "RSYSLOG_FileFormat"  # rsyslog's built-in: `<RFC 3339 time> <host> <tag>: <msg>`


def dhcpd_conf(inventory: Inventory) -> str:
    """ISC dhcpd: PXE boot by client class, the internal subnet, one host stanza per node."""
    c = inventory.cluster
    subnet = c.internal_subnet
    lines = [
        header(inventory),
        "# The second (public) address of a node, handed out as DHCP option 187.",
        "option second-ip code 187 = ip-address;",
        "# The client's architecture (RFC 4578): the boot program is chosen by it.",
        f"option arch code {ARCH_OPTION} = unsigned integer 16;",
        "",
        "authoritative;",
        "allow booting;",
        "allow bootp;",
        "",
        f"subnet {subnet.network_address} netmask {subnet.netmask} {{",
        f"    option routers {c.internal_router};",
        f"    option subnet-mask {subnet.netmask};",
        f"    option broadcast-address {subnet.broadcast_address};",
    ]
    if c.domain:
        lines.append(f'    option domain-name "{c.domain}";')
    lines += [
        f"    next-server {c.boot_server};",
        *dhcpd_boot_file(c.http_url),
        "}",
    ]
    for host in inventory.hosts:
        lines += [
            "",
            f"host {host.name} {{",
            f"    hardware ethernet {host.mac};",
            f"    fixed-address {host.ip};",
            f'    option host-name "{host.fqdn(c.domain)}";',
            f"    option second-ip {host.second_ip};",
            "}",
        ]
    return "\n".join(lines) + "\n"


def dhcpd_boot_file(http_url: str | None) -> list[str]:
    """The `filename` by client class, most specific first (`bootfile.boot_rules`): iPXE
    (only with `http_url`, so it never loads a loader that would start iPXE again), x64 UEFI,
    BIOS; a client without option 93 gets the default."""
    rules = boot_rules(http_url)
    lines = [f"    # The boot program by client class, in this order: "
             f"{', '.join(rule.client.value for rule in rules)} (tcbuild.bootfile)."]
    for n, rule in enumerate(rules):
        if rule.client is Client.IPXE:
            test = f'exists user-class and option user-class = "{IPXE_USER_CLASS}"'
        else:
            test = " or ".join(f"option arch = {arch >> 8:02x}:{arch & 0xff:02x}"
                               for arch in rule.architectures)
        lines += [f"    {'if' if n == 0 else '} elsif'} {test} {{",
                  f'        filename "{rule.file}";']
    return [*lines, "    } else {", f'        filename "{DEFAULT}";', "    }"]


def rsyslog_conf(inventory: Inventory) -> str:
    """rsyslog: UDP and TCP reception, one file per node, the game server's errors apart."""
    c = inventory.cluster
    port = c.syslog_port
    lines = [
        header(inventory),
        f'module(load="imudp")\ninput(type="imudp" port="{port}")',
        f'module(load="imtcp")\ninput(type="imtcp" port="{port}")',
        "",
        "# Unknown senders: one file per hostname the message carries; secpath-replace turns a",
        "# '/' in it (RFC 5424 allows one) into '_', so no sender can write outside the directory.",
        'template(name="TcbuildRemoteFile" type="string"',
        f'         string="{c.log_dir}/%HOSTNAME:::secpath-replace%.log")',
        "",
        "# Nodes are matched by address: busybox syslogd forwards without a hostname.",
        "# RSYSLOG_FileFormat: RFC 3339 times, with the year (`tcbuild fleet` reads the files).",
    ]
    for host in inventory.hosts:
        base = f"{c.log_dir}/{host.name}"
        lines += [
            f"if $fromhost-ip == '{host.ip}' then {{",
            f"    if $syslogfacility-text == 'local0' and $programname == '{c.game_log_tag}' "
            "and $syslogseverity <= 3 then {",
            f'        action(type="omfile" file="{base}-err.log" template="{FILE_FORMAT}")',
            "    }",
            f'    action(type="omfile" file="{base}.log" template="{FILE_FORMAT}")',
            "    stop",
            "}",
        ]
    lines += [
        "if $fromhost-ip != '127.0.0.1' then {",
        f'    action(type="omfile" dynaFile="TcbuildRemoteFile" template="{FILE_FORMAT}")',
        "    stop",
        "}",
    ]
    return "\n".join(lines) + "\n"


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


class Dhcp(StrEnum):
    """The DHCP servers `server-config` writes configs for."""

    ISC = "isc"
    KEA = "kea"
    DNSMASQ = "dnsmasq"


DHCP_FILES: dict[Dhcp, Callable[[Inventory], dict[str, str]]] = {
    Dhcp.ISC: lambda inventory: {"dhcpd.conf": dhcpd_conf(inventory)},
    Dhcp.KEA: kea_files,
    Dhcp.DNSMASQ: dnsmasq_files,
}

GENERATORS: dict[str, Callable[[Inventory], str]] = {
    "rsyslog-tcbuild.conf": rsyslog_conf,
    "exports": exports,
    "ganesha.conf": ganesha_conf,
    "tftpd-hpa": tftpd_hpa,
    "hosts": hosts,
}


@boundary
def server_files(inventory: Inventory, dhcp: Collection[Dhcp] = tuple(Dhcp)) -> dict[str, str]:
    """Every generated file by name, in a fixed order; DHCP configs for the servers in `dhcp`."""
    files = {}
    for server, generate_all in DHCP_FILES.items():
        if server in dhcp:
            files.update(generate_all(inventory))
    files.update({name: generate(inventory) for name, generate in GENERATORS.items()})
    return files
