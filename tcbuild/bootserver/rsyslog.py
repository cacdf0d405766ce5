"""rsyslog's rules on the log host: one file per node, matched by sender address (busybox
syslogd forwards without a hostname), the game server's errors apart, every other sender in one
bounded place; pure text.

Every line is written in tcbuild's own format, `LINE_FORMAT`: the time the log host received it
and the address it came from, then the sender's tag and message. Nothing a sender writes
decides where its line is filed or when it is said to have happened (`tcbuild fleet` relies on
this); only the source address does, and a forged UDP source can claim any address, so the
place for unknown senders is capped: one file a day, at most `UNKNOWN_LIMIT` bytes each.
"""

from __future__ import annotations

from ..config.inventory import Inventory, log_names
from .generated import header

LINE_TEMPLATE = "TcbuildLine"
# `<receive time, RFC 3339> <source address> <tag>: <message>`; rsyslog escapes control
# characters on reception, so a message cannot start a line of its own.
LINE_FORMAT = ("%timegenerated:::date-rfc3339% %fromhost-ip% "
               "%syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")
UNKNOWN_DIR = "unknown"  # under log_dir: what senders outside the inventory say, by day
UNKNOWN_TEMPLATE = "TcbuildUnknownFile"
UNKNOWN_LIMIT = "16m"  # per day's file; past it rsyslog drops that file's lines until the next


def rsyslog_conf(inventory: Inventory) -> str:
    """rsyslog: UDP and TCP reception, one file per node, the game server's errors apart."""
    c = inventory.cluster
    port = c.syslog_port
    day = "-".join(f"%timegenerated:::date-{part}%" for part in ("year", "month", "day"))
    lines = [
        header(inventory),
        f'module(load="imudp")\ninput(type="imudp" port="{port}")',
        f'module(load="imtcp")\ninput(type="imtcp" port="{port}")',
        "",
        "# Every line: the time the log host received it and the address it came from, then the",
        "# sender's tag and message (`tcbuild fleet` reads these files and trusts nothing else).",
        f'template(name="{LINE_TEMPLATE}" type="string"',
        f'         string="{LINE_FORMAT}")',
        "# Senders outside the inventory: one file per day of reception, whatever name or",
        "# address they claim, never in a node's file.",
        f'template(name="{UNKNOWN_TEMPLATE}" type="string"',
        f'         string="{c.log_dir}/{UNKNOWN_DIR}/{day}.log")',
        "",
        "# Nodes are matched by address: busybox syslogd forwards without a hostname.",
    ]
    for host in inventory.hosts:
        node, errors = (f"{c.log_dir}/{name}" for name in log_names(host.name))
        lines += [
            f"if $fromhost-ip == '{host.ip}' then {{",
            f"    if $syslogfacility-text == 'local0' and $programname == '{c.game_log_tag}' "
            "and $syslogseverity <= 3 then {",
            f'        action(type="omfile" file="{errors}" template="{LINE_TEMPLATE}")',
            "    }",
            f'    action(type="omfile" file="{node}" template="{LINE_TEMPLATE}")',
            "    stop",
            "}",
        ]
    lines += [
        "if $fromhost-ip != '127.0.0.1' then {",
        f'    action(type="omfile" dynaFile="{UNKNOWN_TEMPLATE}" template="{LINE_TEMPLATE}"',
        f'           rotation.sizeLimit="{UNKNOWN_LIMIT}")',
        "    stop",
        "}",
    ]
    return "\n".join(lines) + "\n"
