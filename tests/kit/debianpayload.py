"""Real programs from Debian as the payload of the stand-in mirror's `dhcp.tcz`.

Tiny Core's mirror cannot be reached here, so the stand-in extensions of tests/kit/bootkit.py are
filled from Debian's packages instead: ISC `dhclient` (package isc-dhcp-client, as installed on
this machine) with its shared-library closure and the dynamic loader, laid out the way Tiny Core
lays an extension out (`usr/local/sbin`, `usr/local/lib`), and no `dhclient-script`, like
Tiny Core 7.x's `dhcp.tcz`: the example's image brings its own. The stand-in core has no glibc
and no `ldconfig`, so the extension also carries what Tiny Core's `tce-load` would have
produced: `/etc/ld.so.conf` naming `/usr/local/lib`, the `/etc/ld.so.cache` made from it (by the
build host's `ldconfig -r`), and `/lib64/ld-linux-x86-64.so.2`, the loader path compiled into
every x86_64 program, leading to the loader under `/usr/local/lib`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

DHCLIENT = Path("/sbin/dhclient")
LDCONFIG = ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig")
LIB = "usr/local/lib"
INTERP = "lib64/ld-linux-x86-64.so.2"

Files = dict[str, tuple[int, bytes | str]]
"""Path in the extension -> (mode, bytes, or a symlink target as str)."""


def _ldd(program: Path) -> list[Path]:
    """The shared libraries `program` loads, and the loader, as `ldd` resolves them here."""
    out = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found.append(Path(match[1]))
    if not any(p.name.startswith("ld-linux") for p in found):
        raise RuntimeError(f"ldd {program} names no dynamic loader:\n{out}")
    return found


def _ld_so_cache(libraries: Files) -> bytes:
    """The `/etc/ld.so.cache` that `ldconfig` writes for these files in `/usr/local/lib`."""
    ldconfig = next((t for t in LDCONFIG if shutil.which(t)), None)
    if ldconfig is None:
        raise RuntimeError("ldconfig is not installed (apt-get install libc-bin)")
    with tempfile.TemporaryDirectory(prefix="ldcache-") as tmp:
        root = Path(tmp)
        (root / "etc").mkdir()
        (root / "etc/ld.so.conf").write_text(f"/{LIB}\n")
        for rel, (_mode, data) in libraries.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                path.write_bytes(data)
        subprocess.run([ldconfig, "-X", "-r", str(root)], capture_output=True, check=True)
        return (root / "etc/ld.so.cache").read_bytes()


def dhcp_files(dhclient: Path = DHCLIENT) -> Files:
    """`dhcp.tcz`'s files: Debian's dhclient, its libraries and loader, the cache."""
    if not dhclient.is_file():
        raise RuntimeError(f"{dhclient} is missing (apt-get install isc-dhcp-client)")
    files: Files = {"usr/local/sbin/dhclient": (0o755, dhclient.read_bytes())}
    for library in _ldd(dhclient):
        files[f"{LIB}/{library.name}"] = (0o755, library.resolve().read_bytes())
        if library.name.startswith("ld-linux"):
            files[INTERP] = (0o777, str(PurePosixPath("..", LIB, library.name)))
    files["etc/ld.so.conf"] = (0o644, f"/{LIB}\n".encode())
    files["etc/ld.so.cache"] = (0o644, _ld_so_cache(files))
    return files


PAYLOADS = {"dhcp": dhcp_files}
"""The stand-in extensions that carry real programs, and what makes their files."""
