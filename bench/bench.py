"""Build time, CPU, peak memory and size: Tiny Core's own remaster against tcbuild, one run.

`make bench` (as root: the remaster extracts device nodes and owners). It makes a realistic input
once under build/bench/ (a core of about 45 MB uncompressed with the machine's own ELF binaries and
libraries, symlinks, hard links and device nodes; three large extensions; the example overlay),
serves it from the loopback test mirror and measures, on that same input:
  1. the documented remaster: zcat | cpio -idm, copy in the overlay and the unpacked extensions,
     find | cpio -o -H newc | gzip -2, advdef -z4;
  2. the same with gzip -9 instead of gzip -2 + advdef;
  3. tcbuild build (default: smallest output)   4. tcbuild build --fast
  5. tcbuild build --output append              6. an unchanged rebuild (no network request).
It prints the table with ratios against 1 and 2 and writes it to build/bench/results.md.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tcbuild import FetchOptions, fetch, load_recipe  # noqa: E402
from tests.mirrortree import MirrorServer, build_mirror  # noqa: E402

WORK = ROOT / "build/bench"
X64 = "15.x/x86_64"
DIST = f"{X64}/release/distribution_files"
CORE_BYTES = 45_000_000
MAX_FILE = 4_000_000  # a Tiny Core core has no huge files (libLLVM would dwarf everything)
VERSION = "6.6.8-tinycore64"
BIG_EXTENSIONS = {"dhcp": "/usr/share/zoneinfo", "nfs-utils": "/usr/lib/x86_64-linux-gnu/gconv",
                  "openssl": "/usr/lib/x86_64-linux-gnu/perl-base"}


def run(command: list[str] | str, **kw: object) -> None:
    subprocess.run(command, check=True, shell=isinstance(command, str), **kw)  # type: ignore[call-overload]


def put(mirror: Path, rel: str, data: bytes) -> None:
    (mirror / rel).write_bytes(data)
    (mirror / f"{rel}.md5.txt").write_text(f"{hashlib.md5(data).hexdigest()}  {Path(rel).name}\n")


def make_core(src: Path) -> None:
    """A Tiny Core-like root of real binaries, as root: devices, owners, links, hard links."""
    for d in ("bin", "sbin", "etc", "dev", "lib", "usr/bin", "usr/lib", "home/tc", "var", "root"):
        (src / d).mkdir(parents=True, exist_ok=True)
    (src / "tmp").mkdir(mode=0o1777)
    (src / "opt").mkdir()
    (src / "tmp").chmod(0o1777)
    (src / "opt").chmod(0o2775)
    os.chown(src / "opt", 0, 50)
    os.chown(src / "home/tc", 1001, 50)
    (src / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                    "tc:x:1001:50::/home/tc:/bin/sh\n")
    (src / "etc/group").write_text("root:x:0:\nstaff:x:50:tc\n")
    for name, kind, major, minor in (("console", 0o020622, 5, 1), ("null", 0o020666, 1, 3),
                                     ("ttyS0", 0o020660, 4, 64), ("sda", 0o060660, 8, 0)):
        os.mknod(src / "dev" / name, kind, os.makedev(major, minor))
    shutil.copytree("/usr/share/perl", src / "usr/share/perl", symlinks=True)  # many small files
    size = sum(p.stat().st_size for p in (src / "usr/share/perl").rglob("*") if p.is_file())
    for origin in sorted(Path("/usr/lib/x86_64-linux-gnu").iterdir()):
        if size > CORE_BYTES * 0.8:
            break
        if origin.is_symlink():
            (src / "usr/lib" / origin.name).symlink_to(origin.readlink())
        elif origin.is_file() and ".so" in origin.name and origin.stat().st_size < MAX_FILE:
            shutil.copy2(origin, src / "usr/lib" / origin.name)
            size += origin.stat().st_size
    for origin in sorted(Path("/usr/bin").iterdir()):
        if size > CORE_BYTES:
            break
        if origin.is_file() and not origin.is_symlink() and origin.stat().st_size < MAX_FILE:
            shutil.copy2(origin, src / "usr/bin" / origin.name)
            size += origin.stat().st_size
    for i, origin in enumerate(sorted((src / "usr/bin").iterdir())[:4]):
        os.link(origin, src / "bin" / f"hardlink-{i}")
    modules = src / f"lib/modules/{VERSION}/kernel/fs"
    modules.mkdir(parents=True)
    (modules / "squashfs.ko").write_bytes(os.urandom(200_000))


def prepare() -> Path:
    """The mirror with the big core and extensions (made once)."""
    mirror = WORK / "mirror"
    if (mirror / f"{DIST}/corepure64.gz").exists() and (WORK / "ready").exists():
        return mirror
    shutil.rmtree(WORK, ignore_errors=True)
    build_mirror(mirror)
    src = WORK / "core-src"
    make_core(src)
    rootfs = subprocess.run(f"cd {src} && find . ! -path './lib/modules*' | sort | "
                            "cpio -o -H newc --quiet", shell=True, check=True,
                            capture_output=True).stdout
    modules = subprocess.run(f"cd {src} && find ./lib/modules | sort | cpio -o -H newc --quiet",
                             shell=True, check=True, capture_output=True).stdout
    parts = [gzip.compress(rootfs, 9, mtime=0), gzip.compress(modules, 9, mtime=0)]
    put(mirror, f"{DIST}/rootfs64.gz", parts[0])
    put(mirror, f"{DIST}/modules64.gz", parts[1])
    put(mirror, f"{DIST}/corepure64.gz", parts[0] + parts[1])
    for name, origin in BIG_EXTENSIONS.items():
        tree = WORK / f"ext-{name}/usr/local/share"
        tree.mkdir(parents=True)
        shutil.copytree(origin, tree / name, symlinks=True)
        target = WORK / f"{name}.tcz"
        run(["mksquashfs", str(WORK / f"ext-{name}"), str(target), "-b", "4k", "-comp", "gzip",
             "-no-xattrs", "-noappend", "-quiet", "-no-progress", "-all-root"])
        put(mirror, f"{X64}/tcz/{name}.tcz", target.read_bytes())
    (WORK / "ready").touch()
    return mirror


def timed(command: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (KiB) of a shell command and its children."""
    out = WORK / "time.txt"
    run(["/usr/bin/time", "-o", str(out), "-f", "%e %U %S %M", "sh", "-c", command],
        stdout=subprocess.DEVNULL)
    wall, user, system, rss = out.read_text().split()
    return float(wall), float(user) + float(system), int(rss)


def remaster(mirror: Path, extensions: list[Path], compress: str, out: Path) -> str:
    d = WORK / "remaster"
    lines = [f"rm -rf {d} && mkdir {d} && cd {d}"]
    lines += [f"zcat {mirror / DIST / part} | cpio -idm --quiet" for part in
              ("rootfs64.gz", "modules64.gz")]  # cpio stops at a trailer: one part at a time
    lines += [f"unsquashfs -q -n -f -d {d} {tcz} >/dev/null" for tcz in extensions]
    lines += [f"cp -a {ROOT / 'overlays/gameserver'}/. {d}/",
              f"find . | cpio -o -H newc --quiet | {compress} > {out}"]
    return " && ".join(lines)


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("make bench runs as root: the reference remaster extracts devices and owners")
    mirror = prepare()
    tcbuild = str(Path(sys.executable).parent / "tcbuild")
    with MirrorServer(mirror) as server:
        common = (f"{tcbuild} build {ROOT / 'recipes/gameserver.toml'} --mirror {server.url} "
                  f"--cache {WORK / 'cache'} -q")
        run(f"{common} --out {WORK / 'warm'}")  # download once, outside the timings
        recipe = load_recipe(ROOT / "recipes/gameserver.toml").with_mirrors((server.url,))
        inputs = fetch(recipe, FetchOptions(cache_dir=WORK / "cache", progress=False))
        cached = [ext.path for ext in inputs.extensions]  # what the remaster unpacks
        rows = []
        if shutil.which("advdef"):
            out = WORK / "remaster-advdef.gz"
            rows.append(("1 remaster: gzip -2 + advdef -z4",
                         *timed(remaster(mirror, cached, "gzip -2", out) + f" && advdef -z4 {out}"),
                         out.stat().st_size))
        else:
            rows.append(("1 remaster: gzip -2 + advdef -z4 (advdef missing: apt-get install "
                         "advancecomp)", 0.0, 0.0, 0, 0))
        out = WORK / "remaster-gzip9.gz"
        rows.append(("2 remaster: gzip -9", *timed(remaster(mirror, cached, "gzip -9", out)),
                     out.stat().st_size))
        for label, flags, name in (("3 tcbuild build", "--force", "small"),
                                   ("4 tcbuild build --fast", "--force --fast", "fast"),
                                   ("5 tcbuild build --output append", "--force --output append",
                                    "append")):
            rows.append((label, *timed(f"{common} {flags} --out {WORK / name}"),
                         (WORK / name / "core.hts.gz").stat().st_size))
        server.reset()
        rows.append(("6 unchanged rebuild", *timed(f"{common} --out {WORK / 'small'}"),
                     (WORK / "small/core.hts.gz").stat().st_size))
        assert server.requests == [], server.requests
    base1, base2 = rows[0], rows[1]
    table = ["| pipeline | wall s | CPU s | peak RSS MB | output bytes | wall vs 1 | wall vs 2 "
             "| size vs 1 | size vs 2 |", "|---|---|---|---|---|---|---|---|---|"]
    for label, wall, cpu, rss, size in rows:
        def ratio(a: float, b: float) -> str:
            return f"{a / b:.3f}" if b else "-"
        table.append(f"| {label} | {wall:.2f} | {cpu:.2f} | {rss / 1024:.0f} | {size:,} | "
                     f"{ratio(wall, base1[1])} | {ratio(wall, base2[1])} | "
                     f"{ratio(size, base1[4])} | {ratio(size, base2[4])} |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    text = "\n".join([f"Machine: {machine}", "", *table]) + "\n"
    (WORK / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
