"""Build time, CPU, peak memory and size: Tiny Core's own remaster against tcbuild, one run.

`make bench` (as root: the remaster extracts device nodes and owners). It makes a realistic input
once under build/bench/: a core of about 45 MB uncompressed and several thousand entries (the
machine's own ELF binaries and libraries, busybox and its applet symlinks, Perl and zoneinfo
trees, hard links, device nodes, a fifo, files of tc:staff), three extensions of real files, and
the example overlay, served from the loopback test mirror. On that same input it measures
  1. Tiny Core's documented remaster: zcat | cpio -idm, copy in the overlay and the unpacked
     extensions, find | cpio -o -H newc | gzip -2, advdef -z4;
  2. the same with gzip -9 instead of gzip -2 + advdef;
  3. tcbuild build (default: smallest output)   3b. the same, first time (no derived data)
                                                3c. the same with `--check off`
  4. tcbuild build --fast
  5. tcbuild build --output append              6. an unchanged rebuild (no network request)
  7. a rebuild after a one-file overlay edit     8. a rebuild after adding an extension
     (each from a cache holding what the cold build before the change kept, made anew before
     each repetition; its output is compared with a cold build of the changed recipe)
and a cold `tcbuild fetch` over the loopback mirror against curl downloading the same files one
after another. Like the downloads, the cache's derived data (the base's and the extensions'
indexes and data files, the compressed members) is made once before the timings by a first
build of each kind; rows 3b and 5b time that first build (no derived data), and rows 3-4 run
without the compressed members a build keeps (each compresses everything).
tcbuild's modules are byte-compiled first, as an installed package's are. Each pipeline runs
in a child process of a small launcher (`MEASURE`): wall time, CPU time (user + system of the
whole process tree) and peak RSS (the largest process of the tree). Medians over --reps repetitions,
interleaved so that load from other work hits every pipeline alike.
Every output passes `gzip -t` and lists the same names (GNU `cpio -t` for the remasters, every
segment for tcbuild's); tcbuild's outputs are byte-identical across repetitions.
It prints a markdown table with ratios against 1 and 2 and writes it to build/bench/results.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import stat
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tcbuild import FetchOptions, fetch, load_recipe  # noqa: E402
from tcbuild.formats.manifest import read_manifest  # noqa: E402
from tcbuild.formats.newc import NewcWriter, iter_initramfs  # noqa: E402
from tcbuild.formats.tcz import read_tcz  # noqa: E402
from tests.kit.mirrortree import MirrorServer, build_mirror  # noqa: E402

WORK = ROOT / "build/bench"
RECIPE = ROOT / "recipes/gameserver.toml"
X64 = "15.x/x86_64"
DIST = f"{X64}/release/distribution_files"
VERSION = "6.6.8-tinycore64"
LIBS = Path("/usr/lib/x86_64-linux-gnu")
MB = 1_000_000
INPUT_VERSION = "2"  # bump when the generated input changes: an older one is made again
# The recipe's extensions that get real contents: (host tree, where in the extension, budget).
EXTENSIONS = {
    "dhcp": (LIBS / "gconv", "usr/local/lib/gconv", 5 * MB),
    "nfs-utils": (LIBS / "perl-base", "usr/local/lib/perl-base", 4 * MB),
    "libtirpc": (Path("/usr/share/i18n/locales"), "usr/local/share/i18n/locales", 3 * MB),
}


# --- the input ---------------------------------------------------------------------------------

def run(command: list[str] | str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    shell = isinstance(command, str)
    return subprocess.run(command, check=True, shell=shell,  # type: ignore[call-overload,no-any-return]
                          executable="/bin/bash" if shell else None, **kw)


def put(mirror: Path, rel: str, data: bytes) -> None:
    (mirror / rel).write_bytes(data)
    (mirror / f"{rel}.md5.txt").write_text(f"{hashlib.md5(data).hexdigest()}  {Path(rel).name}\n")


def is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def copy_some(source: Path, target: Path, budget: int, keep: Callable[[Path], bool] = bool
              ) -> int:
    """Copy files (and symlinks) of `source` in name order until `budget` bytes; the bytes."""
    size = 0
    for path in sorted(source.rglob("*")):
        if size >= budget:
            break
        dest = target / path.relative_to(source)
        if path.is_symlink() or path.is_dir():
            continue
        if path.is_file() and keep(path):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            size += path.stat().st_size
    for path in sorted(source.rglob("*")):  # symlinks whose target came along
        dest = target / path.relative_to(source)
        if path.is_symlink() and dest.parent.is_dir() and not dest.is_symlink() \
                and (dest.parent / path.readlink()).exists():
            dest.symlink_to(path.readlink())
    return size


def make_core(src: Path) -> None:
    """A Tiny Core-like root of about 45 MB of the machine's files, as root: devices, owners."""
    for d in ("bin", "sbin", "etc", "dev", "lib", "usr/bin", "usr/sbin", "usr/lib", "usr/share",
              "home/tc", "var/log", "root", "mnt", "proc", "sys", "run"):
        (src / d).mkdir(parents=True, exist_ok=True)
    (src / "tmp").mkdir(mode=0o1777)
    (src / "opt").mkdir()
    (src / "tmp").chmod(0o1777)
    (src / "opt").chmod(0o2775)
    os.chown(src / "opt", 0, 50)
    (src / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                    "tc:x:1001:50::/home/tc:/bin/sh\n")
    (src / "etc/group").write_text("root:x:0:\nstaff:x:50:tc\n")
    for name in (".profile", ".ashrc"):
        (src / "home/tc" / name).write_text("export PATH=/usr/local/bin:$PATH\n")
        os.chown(src / "home/tc" / name, 1001, 50)
    os.chown(src / "home/tc", 1001, 50)
    for name, kind, major, minor in (("console", 0o020622, 5, 1), ("null", 0o020666, 1, 3),
                                     ("zero", 0o020666, 1, 5), ("ttyS0", 0o020660, 4, 64),
                                     ("sda", 0o060660, 8, 0)):
        os.mknod(src / "dev" / name, kind, os.makedev(major, minor))
    os.mkfifo(src / "dev/initctl", 0o600)
    shutil.copy2("/bin/busybox", src / "bin/busybox")
    applets = run(["/bin/busybox", "--list"], capture_output=True).stdout.decode().split()
    for applet in applets:
        if applet != "busybox":
            (src / "bin" / applet).symlink_to("busybox")
    copy_some(Path("/usr/share/perl/5.36.0"), src / "usr/share/perl5", 18 * MB)
    copy_some(Path("/usr/share/zoneinfo"), src / "usr/share/zoneinfo", 2 * MB)
    copy_some(Path("/etc"), src / "etc", 1 * MB,
              lambda p: p.name not in ("passwd", "group", "shadow", "gshadow")
              and p.suffix != ".pem" and os.access(p, os.R_OK))
    size, kept = 0, set()
    for origin in sorted(LIBS.iterdir()):  # libraries and the symlinks naming them
        if size < 12 * MB and origin.is_file() and not origin.is_symlink() \
                and ".so" in origin.name and origin.stat().st_size < 1_500_000:
            shutil.copy2(origin, src / "usr/lib" / origin.name)
            size += origin.stat().st_size
            kept.add(origin.name)
    for origin in sorted(LIBS.iterdir()):
        if origin.is_symlink() and origin.readlink().name in kept:
            (src / "usr/lib" / origin.name).symlink_to(origin.readlink().name)
    copy_some(Path("/usr/bin"), src / "usr/bin", 7 * MB,
              lambda p: is_elf(p) and p.stat().st_size < 1_000_000)
    linked = sorted(p for p in (src / "usr/bin").iterdir() if not p.is_symlink())[:4]
    for origin in linked:  # three pairs and a triple of hard links
        os.link(origin, src / "usr/sbin" / f"{origin.name}-link")
    os.link(linked[0], src / "sbin" / f"{linked[0].name}-link")
    modules = src / f"lib/modules/{VERSION}/kernel"
    size, names = 0, []
    for origin in sorted(LIBS.iterdir(), reverse=True):  # compressed modules, as Tiny Core's
        if size < 3 * MB and origin.is_file() and not origin.is_symlink() \
                and ".so" in origin.name and origin.name not in kept \
                and origin.stat().st_size < 100_000:
            stem = origin.name.partition(".so")[0].removeprefix("lib")
            name = f"drivers/{stem[0]}/{stem}.ko.gz"
            (modules / name).parent.mkdir(parents=True, exist_ok=True)
            (modules / name).write_bytes(gzip.compress(origin.read_bytes(), 9, mtime=0))
            size += (modules / name).stat().st_size
            names.append(f"kernel/{name}:\n")
    (modules.parent / "modules.dep").write_text("".join(names))


def make_extension(name: str, source: Path, where: str, budget: int) -> Path:
    """A .tcz of real files, packed as Tiny Core packs extensions."""
    tree = WORK / f"ext-{name}"
    copy_some(source, tree / where, budget)
    if name == "nfs-utils":  # an install script: setup.lst runs it at boot
        script = tree / "usr/local/tce.installed/nfs-utils"
        script.parent.mkdir(parents=True)
        script.write_text("#!/bin/sh\nmkdir -p /var/lib/nfs\n")
        script.chmod(0o755)
    target = WORK / f"{name}.tcz"
    run(["mksquashfs", str(tree), str(target), "-b", "4k", "-comp", "gzip", "-no-xattrs",
         "-noappend", "-quiet", "-no-progress", "-all-root", "-mkfs-time", "0"])
    return target


def prepare() -> Path:
    """The mirror with the big core and extensions (made once)."""
    mirror = WORK / "mirror"
    ready = WORK / "ready"
    if ready.exists() and ready.read_text() == INPUT_VERSION:
        return mirror
    shutil.rmtree(WORK, ignore_errors=True)
    build_mirror(mirror)
    src = WORK / "core-src"
    make_core(src)
    parts = []
    for selection in ("! -path './lib/modules*'", "-path './lib/modules*'"):
        archive = run(f"cd {src} && find . {selection} | LC_ALL=C sort | "
                      "cpio -o -H newc --quiet", capture_output=True).stdout
        parts.append(gzip.compress(archive, 9, mtime=0))
    put(mirror, f"{DIST}/rootfs64.gz", parts[0])
    put(mirror, f"{DIST}/modules64.gz", parts[1])
    put(mirror, f"{DIST}/corepure64.gz", parts[0] + parts[1])
    for name, (source, where, budget) in EXTENSIONS.items():
        put(mirror, f"{X64}/tcz/{name}.tcz",
            make_extension(name, source, where, budget).read_bytes())
    ready.write_text(INPUT_VERSION)
    return mirror


def overlay_tree(image: Path, core: list[Path], extensions: list[Path]) -> Path:
    """What tcbuild adds beyond the base and the unpacked extensions (the rendered overlay,
    tce.installed markers, setup.lst), as a directory the remaster copies in like an overlay."""
    known = {e.path for part in core for e in iter_initramfs(part, data=False)}
    known |= {e.path for tcz in extensions for e in read_tcz(tcz)}
    manifest = read_manifest(image.parent)
    assert manifest is not None
    overlay = {e["path"] for e in manifest.entries if e["origin"].startswith("overlay:")}
    tree = WORK / "overlay-tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    with (WORK / "overlay.cpio").open("wb") as f, NewcWriter(f) as writer:
        for entry in iter_initramfs(image):
            if (entry.path not in known or entry.path in overlay) and entry.nlink < 2:
                writer.add(entry)
    run(f"cd {tree} && cpio -idm --quiet < {WORK / 'overlay.cpio'}")
    return tree


# --- measuring ---------------------------------------------------------------------------------

@dataclass
class Sample:
    wall: float
    cpu: float
    rss_kib: int


@dataclass
class Pipeline:
    key: str
    label: str
    command: str
    output: Path | None
    setup: Callable[[], None] | None = None  # before each run, outside the timing
    samples: list[Sample] = field(default_factory=list)
    digests: set[str] = field(default_factory=set)
    requests: list[int] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)

    @property
    def size(self) -> int:
        return self.output.stat().st_size if self.output else 0


# Runs a command and reports its wall time and its process tree's CPU time and peak RSS. A child
# starts with its parent's peak RSS (the kernel keeps the high-water mark across fork and exec),
# so the bench's own memory would floor every figure: this small process stands between them.
MEASURE = """
import json, os, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1], shell=True, executable="/bin/bash",
                      stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps([code, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss]))
"""


def measure(command: str) -> Sample:
    """Run a shell command; wall, CPU (user + system, children included) and peak RSS."""
    out = subprocess.run([sys.executable, "-S", "-c", MEASURE, command], check=True,
                         capture_output=True, text=True).stdout
    code, wall, cpu, rss = json.loads(out)
    if code:
        raise SystemExit(f"failed ({code}): {command}")
    return Sample(wall, cpu, rss)


def remaster(extensions: list[Path], overlay: Path, compress: str, out: Path) -> str:
    """Tiny Core's documented remaster, as root."""
    d = WORK / "remaster"  # removed with the previous output before each run, untimed
    lines = [f"mkdir {d} && cd {d}"]
    lines += [f"zcat {WORK / 'mirror' / DIST / part} | cpio -idm --quiet" for part in
              ("rootfs64.gz", "modules64.gz")]  # cpio stops at a trailer: one part at a time
    lines += [f"unsquashfs -q -n -f -d {d} {tcz} >/dev/null" for tcz in extensions]
    lines += [f"cp -a {overlay}/. {d}/",
              f"find . | cpio -o -H newc --quiet | {compress} > {out}"]
    return " && ".join(lines)


def clean_remaster() -> None:
    shutil.rmtree(WORK / "remaster", ignore_errors=True)


def names_gnu(path: Path) -> set[str]:
    listing = run(f"zcat {path} | cpio -it --quiet", capture_output=True).stdout
    return {n.removeprefix("./") or "." for n in listing.decode("utf-8", "surrogateescape")
            .splitlines()}


def names_all_segments(path: Path) -> set[str]:
    return {e.path for e in iter_initramfs(path, data=False)}


def describe_input(core: list[Path], extensions: list[Path], overlay: Path) -> str:
    """What the pipelines get: the core's entries by type, the extensions, the overlay."""
    kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
             stat.S_IFCHR: "character device", stat.S_IFBLK: "block device", stat.S_IFIFO: "fifo"}
    counts: dict[str, int] = {}
    size = links = 0
    for part in core:
        for e in iter_initramfs(part):
            kind = kinds[stat.S_IFMT(e.mode)]
            counts[kind] = counts.get(kind, 0) + 1
            size += e.size
            links += stat.S_ISREG(e.mode) and e.nlink > 1
    elf = sum(1 for part in core for e in iter_initramfs(part)
              if e.data and e.data.startswith(b"\x7fELF"))
    exts = [list(read_tcz(tcz)) for tcz in extensions]
    big = [(tcz, es) for tcz, es in zip(extensions, exts, strict=True)
           if sum(e.size for e in es) > MB]
    overlay_files = sum(1 for p in overlay.rglob("*") if not p.is_dir())
    return (f"Input: a core (rootfs64.gz + modules64.gz) of {sum(counts.values()):,} entries, "
            f"{size / MB:.1f} MB uncompressed ("
            + ", ".join(f"{n:,} {k if n == 1 else k.replace('ory', 'orie') + 's'}"
                        for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            + f"; {elf:,} ELF binaries and libraries, {links} hard-linked names); "
            f"{len(big)} extensions of real files ("
            + ", ".join(f"{len(es):,} entries / {sum(e.size for e in es) / MB:.1f} MB"
                        for _, es in big)
            + f") among the recipe's {len(extensions)}; the example overlay rendered "
            f"({overlay_files} files and symlinks tcbuild adds besides base and extensions).")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return (f"{model}, {os.cpu_count()} cores, {platform.machine()}, Linux "
            f"{platform.release()}, Python {platform.python_version()}")


def fetch_comparison(server: MirrorServer, tcbuild: str, reps: int, startup: float) -> str:
    """Cold `tcbuild fetch` over the loopback mirror against curl of the same files in a row."""
    cold = WORK / "cold-cache"
    walls, curl_walls, files = [], [], []
    for _ in range(reps):
        shutil.rmtree(cold, ignore_errors=True)
        server.reset()
        walls.append(measure(f"{tcbuild} fetch {RECIPE} --mirror {server.url} --cache {cold} "
                             "-q").wall)
        files = [rel for rel in dict.fromkeys(server.requests)
                 if (WORK / "mirror" / rel).is_file()]
        target = WORK / "curl"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        args = " ".join(f"-o {target}/{i} {server.url}{rel}" for i, rel in enumerate(files))
        curl_walls.append(measure(f"curl -sS --fail {args}").wall)
    size = sum((WORK / "mirror" / rel).stat().st_size for rel in files)
    wall, curl_wall = statistics.median(walls), statistics.median(curl_walls)
    return (f"Cold fetch (empty cache, loopback mirror, median of {reps}): `tcbuild fetch` "
            f"{wall:.2f} s for {len(files)} files, {size / MB:.1f} MB = "
            f"{size / MB / wall:.0f} MB/s ({startup:.2f} s of it starting Python and importing "
            f"tcbuild); curl downloading the same files one after another {curl_wall:.2f} s = "
            f"{size / MB / curl_wall:.0f} MB/s (tcbuild/curl {wall / curl_wall:.2f}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument("--no-advdef", action="store_true",
                        help="skip pipeline 1 (it alone takes minutes)")
    parser.add_argument("--tcbuild-only", action="store_true",
                        help="only pipelines 3-6 (for iterating)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("make bench runs as root: the reference remaster extracts devices and owners")
    for tool in ("advdef", "cpio", "unsquashfs", "mksquashfs", "curl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (make tools installs what the tests and bench use)")
    prepare()
    tcbuild = str(Path(sys.executable).parent / "tcbuild")
    load_before = os.getloadavg()
    with MirrorServer(WORK / "mirror") as server:
        common = (f"{tcbuild} build {RECIPE} --mirror {server.url} --cache {WORK / 'cache'} -q")
        run([sys.executable, "-m", "compileall", "-q", str(ROOT / "tcbuild")])
        run(f"{common} --force --out {WORK / 'warm'}")  # downloads once, outside the timings
        cold = common.replace(str(WORK / "cache"), str(WORK / "cache-repack"))
        run(f"{cold} --force --out {WORK / 'warm'}")  # rows 3-4: a cache without members
        run(f"{common} --force --output append --out {WORK / 'warm-append'}")
        recipe = load_recipe(RECIPE).with_mirrors((server.url,))
        inputs = fetch(recipe, FetchOptions(cache_dir=WORK / "cache"))
        extensions = [ext.path for ext in inputs.extensions]  # what the remaster unpacks
        core = [part.path for part in inputs.core]
        overlay = overlay_tree(WORK / "warm/core.hts.gz", core, extensions)
        input_line = describe_input(core, extensions, overlay)
        startup = statistics.median(
            measure(f"{sys.executable} -c 'import tcbuild.cli.commands'").wall for _ in range(5))
        pipelines = []
        if not args.tcbuild_only:
            if not args.no_advdef:
                out = WORK / "remaster-advdef.gz"
                pipelines.append(Pipeline(
                    "1", "1 remaster: gzip -2 + advdef -z4",
                    remaster(extensions, overlay, "gzip -2", out) + f" && advdef -q -z4 {out}",
                    out, clean_remaster))
            out = WORK / "remaster-gzip9.gz"
            pipelines.append(Pipeline("2", "2 remaster: gzip -9",
                                      remaster(extensions, overlay, "gzip -9", out), out,
                                      clean_remaster))
        for key, label, flags, name in (
                ("3", "3 tcbuild build", "--force", "small"),
                ("3b", "3b the same, first time (no derived data in the cache)", "--force",
                 "small-cold"),
                ("3c", "3c the same without the will-it-run check", "--force --check off",
                 "unchecked"),
                ("4", "4 tcbuild build --fast", "--force --fast", "fast"),
                ("5", "5 tcbuild build --output append", "--force --output append", "append"),
                ("5b", "5b the same, first time (no derived data in the cache)",
                 "--force --output append", "append-cold"),
                ("6", "6 unchanged rebuild", "", "small")):
            setup = {"5b": lambda: shutil.rmtree(WORK / "cache/derived"),
                     "3b": lambda: shutil.rmtree(WORK / "cache-repack/derived")}.get(
                key, drop_members if key in ("3", "3c", "4") else None)
            pipelines.append(Pipeline(
                key, label, f"{cold if key in ('3', '3b', '3c', '4') else common} {flags} --out "
                f"{WORK / name}", WORK / name / "core.hts.gz", setup))
        pipelines += incremental(tcbuild, server.url)
        for rep in range(args.reps):
            for p in pipelines:
                if p.setup:
                    p.setup()
                server.reset()
                p.samples.append(measure(p.command))
                p.requests.append(len(server.requests))
                if p.output:
                    p.digests.add(hashlib.sha256(p.output.read_bytes()).hexdigest())
                print(f"rep {rep + 1}: {p.label}: {p.samples[-1].wall:.2f} s", file=sys.stderr)
        fetch_line = fetch_comparison(server, tcbuild, args.reps, startup)
    load_after = os.getloadavg()
    checks = validate(pipelines)
    report(pipelines, checks, [input_line, "", fetch_line], load_before, load_after, args.reps)


EDITED = "opt/bootlocal.sh.j2"  # the overlay file the edit row changes
ADDED = "dhcp"  # the extension the other row adds


State = tuple[str, bytes]  # the recipe's text, the edited overlay file's bytes


def incremental(tcbuild: str, mirror: str) -> list[Pipeline]:
    """Rows 7 and 8, each on a copy of the recipe and overlay, with a cache of their own.
    Before each timed rebuild (outside the timing) the cache's derived data is deleted and the
    recipe before the change is built cold; then the change is made."""

    def row(key: str, label: str, out: str, change: Callable[[State], tuple[State, State]]
            ) -> Pipeline:
        copy = WORK / f"edit-{key}"
        shutil.rmtree(copy, ignore_errors=True)
        for part in ("recipes", "overlays", "examples"):
            shutil.copytree(ROOT / part, copy / part)
        recipe, edited = copy / "recipes/gameserver.toml", copy / "overlays/gameserver" / EDITED
        first, then = change((recipe.read_text(), edited.read_bytes()))
        command = (f"{tcbuild} build {recipe} --mirror {mirror} --cache {WORK / 'cache-edit'} "
                   f"--json --out {WORK / out}")

        def setup() -> None:
            recipe.write_text(first[0])
            edited.write_bytes(first[1])
            shutil.rmtree(WORK / "cache-edit/derived", ignore_errors=True)
            shutil.rmtree(WORK / out, ignore_errors=True)
            run(command, stdout=subprocess.DEVNULL)
            recipe.write_text(then[0])
            edited.write_bytes(then[1])

        return Pipeline(key, label, f"{command} > {WORK / out}.json", WORK / out / "core.hts.gz",
                        setup)

    return [row("7", "7 rebuild after an overlay edit (one file)", "edited",
                lambda state: (state, (state[0], state[1] + b"# edited\n"))),
            row("8", f"8 rebuild after adding an extension ({ADDED})", "added",
                lambda state: ((state[0].replace(f'"{ADDED}", ', ""), state[1]), state))]


def cold_twin(p: Pipeline) -> str:
    """Rows 7 and 8 give what a cold build of the changed recipe gives from an empty cache;
    how many gzip members the rebuild compressed, of how many."""
    cache, out = WORK / f"cache-cold-{p.key}", WORK / f"cold-{p.key}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    for part in ("objects", "refs", "notes"):  # the downloads, no derived data
        shutil.copytree(WORK / "cache-edit" / part, cache / part)
    assert p.output is not None
    result = json.loads((WORK / f"{p.output.parent.name}.json").read_text())
    cold = run(p.command.replace(str(WORK / "cache-edit"), str(cache))
               .replace(str(p.output.parent), str(out)).partition(" > ")[0],
               capture_output=True)
    total = json.loads(cold.stdout)["compressed"]
    if (out / p.output.name).read_bytes() != p.output.read_bytes():
        raise SystemExit(f"{p.label}: other bytes than a cold build of the same recipe")
    return (f"({p.key}) compressed {result['compressed']} of the {total} gzip members and gave "
            "the bytes of a cold build of the changed recipe from an empty cache.")


def drop_members() -> None:
    """Rows 3-4 build cold: the compressed members kept in their cache go (before each run,
    untimed); the indexes, data files and the check's data stay, as after any earlier build."""
    for path in (WORK / "cache-repack/derived").glob("*/*"):
        data = path.read_bytes()
        if data[32:34] == b"\x1f\x8b" and hashlib.sha256(data[32:]).digest() == data[:32]:
            path.unlink()


def validate(pipelines: list[Pipeline]) -> list[str]:
    """gzip -t, the same names everywhere, byte-identical tcbuild outputs, no requests."""
    lines = []
    names: dict[str, set[str]] = {}
    for p in pipelines:
        assert p.output is not None
        run(["gzip", "-t", str(p.output)])
        names[p.key] = (names_gnu(p.output) if p.key in ("1", "2") else
                        names_all_segments(p.output))
        if p.key not in ("1", "2") and len(p.digests) != 1:
            raise SystemExit(f"{p.label}: outputs differ between repetitions")
        if p.key not in ("1", "2") and any(p.requests):
            raise SystemExit(f"{p.label}: made network requests {p.requests}")
    keyed = {p.key: p for p in pipelines}
    lines += [cold_twin(keyed[key]) for key in ("7", "8") if key in keyed]
    if "5" in keyed and "5b" in keyed and keyed["5"].digests != keyed["5b"].digests:
        raise SystemExit("append mode gives other bytes with its derived data cached")
    reference = names[pipelines[0].key]
    for key, found in names.items():
        if found != reference:
            raise SystemExit(f"pipeline {key} lists other names than pipeline "
                             f"{pipelines[0].key}: only here {sorted(found - reference)[:5]}, "
                             f"missing {sorted(reference - found)[:5]}")
    lines.append(f"All {len(pipelines)} outputs pass `gzip -t` and list the same "
                 f"{len(reference):,} names (GNU `cpio -t` for 1-2, every segment of tcbuild's); "
                 "tcbuild's are byte-identical across repetitions (5 and 5b too: cached parts "
                 "change nothing) and made no network request.")
    return lines


def report(pipelines: list[Pipeline], checks: list[str], notes: list[str],
           load_before: tuple[float, ...], load_after: tuple[float, ...], reps: int) -> None:
    by_key = {p.key: p for p in pipelines}

    def ratio(p: Pipeline, base: str, what: str) -> str:
        ref = by_key.get(base)
        if ref is None:
            return "-"
        a, b = (p.median("wall"), ref.median("wall")) if what == "wall" else (p.size, ref.size)
        return f"{a / b:.3f}"

    table = ["| pipeline | wall s (median) | wall min-max | CPU s | peak RSS MB | output bytes "
             "| wall vs 1 | wall vs 2 | wall vs 3 | size vs 1 | size vs 2 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pipelines:
        walls = [s.wall for s in p.samples]
        table.append(
            f"| {p.label} | {p.median('wall'):.2f} | {min(walls):.2f}-{max(walls):.2f} | "
            f"{p.median('cpu'):.2f} | {max(s.rss_kib for s in p.samples) / 1024:.0f} | "
            f"{p.size:,} | {ratio(p, '1', 'wall')} | {ratio(p, '2', 'wall')} | "
            f"{ratio(p, '3', 'wall')} | "
            f"{ratio(p, '1', 'size')} | {ratio(p, '2', 'size')} |")
    targets = []

    def target(text: str, ok: bool | None) -> None:
        targets.append(f"- {'n/a' if ok is None else 'holds' if ok else 'MISSED'}: {text}")

    p1, p2, p3 = by_key.get("1"), by_key.get("2"), by_key.get("3")
    if p3:
        w3 = p3.median("wall")
        target(f"(3) wall <= 0.10 of (1)'s and size <= (1)'s: "
               f"{ratio(p3, '1', 'wall')} / {ratio(p3, '1', 'size')}",
               None if p1 is None else w3 <= 0.10 * p1.median("wall") and p3.size <= p1.size)
        target(f"(3) no slower than (2), size <= 0.96 of (2)'s: "
               f"{ratio(p3, '2', 'wall')} / {ratio(p3, '2', 'size')}",
               None if p2 is None else w3 <= p2.median("wall") and p3.size <= 0.96 * p2.size)
        for key in ("3", "3b"):
            peak = max(s.rss_kib for s in by_key[key].samples) / 1024
            target(f"({key}) peak RSS < 120 MB: {peak:.0f} MB", peak < 120)
    p3c = by_key.get("3c")
    if p3 and p3c:
        target(f"(3) the check adds <= 10% to a cold build: (3)/(3c) {ratio(p3, '3c', 'wall')}",
               p3.median("wall") <= 1.10 * p3c.median("wall"))
    p7 = by_key.get("7")
    if p3 and p7:
        target(f"(7) wall <= 0.15 of (3)'s and under 1 s: {ratio(p7, '3', 'wall')}, "
               f"{p7.median('wall'):.2f} s",
               p7.median("wall") <= 0.15 * p3.median("wall") and p7.median("wall") < 1)
    for key, limit in (("4", 1.5), ("5", 0.3), ("6", 0.25)):
        p = by_key[key]
        target(f"({key}) under {limit} s: {p.median('wall'):.2f} s", p.median("wall") < limit)
    text = "\n".join([
        f"Machine: {machine()}. Medians of {reps} interleaved repetitions; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after.", "", *table, "",
        "Targets:", *targets, "", *checks, "", *notes]) + "\n"
    (WORK / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
