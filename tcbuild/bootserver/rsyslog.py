"""rsyslog's rules on the log host: one file per node, matched by sender address (busybox
syslogd forwards without a hostname), the game server's errors apart; pure text."""

from __future__ import annotations

from ..config.inventory import Inventory
from .generated import header

FILE_FORMAT = "RSYSLOG_FileFormat"  # rsyslog's built-in: `<RFC 3339 time> <host> <tag>: <msg>`


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
