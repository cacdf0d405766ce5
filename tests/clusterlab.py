"""The seed's cluster in network namespaces: the boot server's daemons, the gateway, the nodes.

Everything is started from what tcbuild wrote (tests/netns.py's `Lab` keeps it off the host):
ISC dhcpd, tftpd-hpa, rsyslogd and NFS-Ganesha run in the boot server's namespace from the
generated files; the node QEMUs hang on two bridges, the internal one (the boot server) and the
external one (the gateway). Used by tests/test_cluster_e2e.py, tests/test_daemons.py and
`make demo`.
"""

from __future__ import annotations

import shlex
import struct
import subprocess
import sys
from pathlib import Path

from .netns import Daemon, Lab, wait_for

NFS_PORT = 2049
NFS_PROGRAM, NFS_V4 = 100003, 4


def start_ganesha(lab: Lab, namespace: str, conf: Path, share: Path, export: str,
                  name: str = "ganesha") -> Daemon:
    """ganesha.nfsd with the generated `conf`, serving `share` at the export path `export`.

    Only the log and pid file are moved, by command-line flags. In its own mount namespace the
    export path is `share` bind-mounted, and /srv, /var/lib and /run (where Ganesha keeps its
    NFSv4 recovery data and run files) are copy-on-write: nothing reaches the host's.
    """
    q, workdir = shlex.quote, lab.workdir
    setup = f"mkdir -p {q(export)}\nmount --bind {q(str(share))} {q(export)}"
    daemon = lab.start(namespace, name, [
        "ganesha.nfsd", "-F", "-f", conf, "-L", workdir / f"{name}.out",
        "-p", workdir / f"{name}.pid", "-N", "NIV_EVENT"],
        private=["/srv", "/var/lib", "/run"], setup=setup)
    log = workdir / f"{name}.out"
    wait_for(lambda: log.exists() and "NFS SERVER INITIALIZED" in log.read_text(errors="replace"),
             "ganesha.nfsd initialized", watch=[daemon], timeout=30)
    return daemon


NFS_NULL_PROBE = f"""
import socket, struct, sys
call = struct.pack(">10I", 0x7c1, 0, 2, {NFS_PROGRAM}, {NFS_V4}, 0, 0, 0, 0, 0)
with socket.create_connection((sys.argv[1], {NFS_PORT}), timeout=5) as s:
    s.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
    reply = b""
    while len(reply) < 4 + 24:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
sys.stdout.write(reply.hex())
"""


def nfs_null(lab: Lab, namespace: str, address: str) -> tuple[int, int, int]:
    """An RPC NULL call to NFSv4 at `address`, made from a namespace of the lab.

    Returns (message type, reply status, accept status): (1, 0, 0) is an accepted, successful
    reply from an NFS server that speaks version 4.
    """
    if namespace not in lab.namespaces:
        raise ValueError(f"{namespace} is not a namespace of this lab")
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c",
                           NFS_NULL_PROBE, address], capture_output=True, text=True, timeout=15,
                          check=False)
    if done.returncode != 0:
        raise AssertionError(f"NFS NULL call to {address}:{NFS_PORT} failed: {done.stderr}")
    reply = bytes.fromhex(done.stdout)
    xid, kind, status, _flavor, _length, accept = struct.unpack(">6I", reply[4:28])
    assert xid == 0x7c1, reply
    return kind, status, accept
