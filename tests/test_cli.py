"""The `tcbuild` command as an operator runs it: output, exit status, one line per problem."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

from .kit.mirrortree import MirrorServer
from .test_structure import HEAVY, loaded_modules

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "recipes/gameserver.toml"


def tcbuild(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_fetch_the_example_recipe_then_again_from_cache(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    cache = tmp_path / "cache"
    first = tcbuild("fetch", "recipes/gameserver.toml", "--mirror", mirror.url, "--cache", cache)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    for name in ("vmlinuz64", "corepure64.gz", "dhcp.tcz", "nfs-utils.tcz", "rpcbind.tcz",
                 "libtirpc.tcz", "filesystems-6.6.8-tinycore64.tcz", "openssl.tcz"):
        assert any(line.split()[0] == name and line.endswith(mirror.url) for line in lines), name
    assert any(line.split()[0] == "nrpe.tcz" and line.endswith("local") for line in lines)
    assert lines[-1].startswith("9 files, ") and "8 from " + mirror.url in lines[-1]
    assert "(kernel 6.6.8-tinycore64)" in lines[-1]
    assert first.stderr == ""  # no progress bar without a terminal

    mirror.reset()
    second = tcbuild("fetch", EXAMPLE, "--mirror", mirror.url, "--cache", cache, "--json")
    assert second.returncode == 0, second.stderr
    assert mirror.requests == []
    report = json.loads(second.stdout)
    assert report["kernel_version"] == "6.6.8-tinycore64"
    assert {f["origin"] for f in report["files"]} == {"cache", "local"}
    assert report["order"][-1] == "nrpe.tcz"


def test_deps_prints_the_tree(tmp_path: Path, mirror: MirrorServer) -> None:
    result = tcbuild("deps", EXAMPLE, "--mirror", mirror.url, "--cache", tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].endswith("gameserver.toml: Tiny Core 15.x corepure64 (x86_64), 7 extensions")
    assert "├── nfs-utils.tcz" in out and "│   ├── rpcbind.tcz" in out
    assert "│   │   └── libtirpc.tcz" in out and "│   ├── libtirpc.tcz" in out
    assert any(line.startswith("└── nrpe.tcz (local: ") for line in out)
    assert out[-1] == ("load order: dhcp.tcz libtirpc.tcz rpcbind.tcz "
                       "filesystems-6.6.8-tinycore64.tcz nfs-utils.tcz openssl.tcz nrpe.tcz")


def test_bad_recipe_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[tinycore]\nrelease = "15"\nflavor = "pure64"\n[extensions]\nmode = 1\n')
    result = tcbuild("fetch", recipe, "--cache", tmp_path / "cache")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{recipe}: tinycore.release: '15' is not a release series like '15.x'",
        f"{recipe}: tinycore.flavor: 'pure64' is not one of: core | corepure64 | core64",
        f"{recipe}: extensions.mode: expected a string, got an integer",
    ]
    assert not (tmp_path / "cache").exists()


def test_unknown_extension_exits_2_and_missing_dependency_exits_1(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[tinycore]\nrelease = "15.x"\n[extensions]\ninstall = ["nfs-utilz"]\n')
    typo = tcbuild("deps", recipe, "--mirror", mirror.url, "--cache", tmp_path / "c")
    assert (typo.returncode, typo.stderr) == (
        2, f"{recipe}: extensions.install[0]: 'nfs-utilz' is not on the mirror "
           "(did you mean 'nfs-utils'?)\n")
    recipe.write_text('[tinycore]\nrelease = "15.x"\n[extensions]\ninstall = ["broken-chain"]\n')
    chain = tcbuild("fetch", recipe, "--mirror", mirror.url, "--cache", tmp_path / "c")
    assert (chain.returncode, chain.stderr) == (
        1, "r.toml -> broken-chain -> ghost.tcz: not found on any mirror\n")
    debug = tcbuild("fetch", recipe, "--mirror", mirror.url, "--cache", tmp_path / "c", "--debug")
    assert "Traceback" in debug.stderr and debug.returncode == 1


def test_offline_with_an_empty_cache(tmp_path: Path) -> None:
    result = tcbuild("fetch", EXAMPLE, "--offline", "--cache", tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"offline: 8 file(s) missing from the cache {tmp_path}: ")
    assert len(result.stderr.splitlines()) == 1


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    result = tcbuild("fetch", EXAMPLE, "--mirror", "ftp://x/", "--cache", tmp_path)
    assert result.returncode == 2
    assert result.stderr == "--mirror ftp://x/: a mirror must be an http:// or https:// URL\n"
    assert tcbuild("fetch").returncode == 2
    assert tcbuild("nonsense").returncode == 2


def test_console_script_is_installed() -> None:
    script = shutil.which("tcbuild", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("tcbuild ")


def test_progress_bar_on_a_terminal_only(tmp_path: Path, mirror: MirrorServer) -> None:
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        args = [sys.executable, "-m", "tcbuild", "fetch", str(EXAMPLE), "--mirror", mirror.url]
        shown = subprocess.run([*args, "--cache", str(tmp_path / "a")], cwd=ROOT, stdin=None,
                               stdout=subprocess.PIPE, stderr=secondary, timeout=120)
        os.close(secondary)
        terminal = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(primary, 65536):
                terminal += chunk
    finally:
        os.close(primary)
    assert shown.returncode == 0
    assert b"fetch:" in terminal and b"100%" in terminal  # tqdm drew and finished its bar
    quiet = subprocess.run([*args, "--cache", str(tmp_path / "b"), "--quiet"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_two_processes_fetch_into_one_cache_at_once(tmp_path: Path, mirror: MirrorServer) -> None:
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "tcbuild", "fetch", str(EXAMPLE), "--mirror", mirror.url,
            "--cache", str(cache), "--json"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    files = [{f["name"]: f["sha256"] for f in json.loads(out)["files"]} for out, _ in outputs]
    assert files[0] == files[1] and len(files[0]) == 9
    assert list((cache / "tmp").iterdir()) == []
    mirror.reset()
    assert tcbuild("fetch", EXAMPLE, "--mirror", mirror.url, "--cache", cache).returncode == 0
    assert mirror.requests == []


def test_build_inspect_and_diff(tmp_path: Path, mirror: MirrorServer) -> None:
    args = ["--mirror", mirror.url, "--cache", str(tmp_path / "c")]
    first = tcbuild("build", EXAMPLE, *args, "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith(f"{tmp_path / 'a'}: built in ")
    again = tcbuild("build", EXAMPLE, *args, "--out", tmp_path / "a")
    assert ": up to date in " in again.stdout.splitlines()[0]
    fast = tcbuild("build", EXAMPLE, *args, "--out", tmp_path / "b", "--fast", "--json")
    assert json.loads(fast.stdout)["up_to_date"] is False
    assert (tmp_path / "b/core.hts.gz").stat().st_size > (tmp_path / "a/core.hts.gz").stat(
        ).st_size  # level 4 against level 12
    listing = tcbuild("inspect", tmp_path / "a").stdout.splitlines()
    assert any(line.startswith("crw--w--w-     0:0           5,1  dev/console  [base]")
               for line in listing), listing[:12]
    assert any("usr/local/etc/nagios/nrpe.cfg  [extension:nrpe.tcz]" in line for line in listing)
    same = tcbuild("diff", tmp_path / "a", tmp_path / "b")
    assert same.stdout == "no differences\n"
    (tmp_path / "edited").mkdir()
    shutil.copytree(ROOT / "overlays", tmp_path / "edited/overlays")
    shutil.copytree(ROOT / "recipes", tmp_path / "edited/recipes")
    shutil.copytree(ROOT / "examples", tmp_path / "edited/examples")
    (tmp_path / "edited/overlays/gameserver/etc").mkdir(exist_ok=True)
    (tmp_path / "edited/overlays/gameserver/etc/motd").write_text("hello\n")
    edited = tcbuild("build", tmp_path / "edited/recipes/gameserver.toml", *args,
                     "--out", tmp_path / "e")
    assert edited.returncode == 0, edited.stderr
    changed = tcbuild("diff", tmp_path / "a", tmp_path / "e").stdout.splitlines()
    assert changed[-1] == "1 added, 0 removed, 1 content, 0 metadata"
    assert re.match(r"\+ -rw-r--r-- +0:0 +6  etc/motd  \[overlay:", changed[0]), changed
    assert changed[1].startswith("~ opt/bootlocal.sh: content ")  # it logs the build id


def test_an_unchanged_rebuild_loads_only_what_it_needs(tmp_path: Path, mirror: MirrorServer
                                                       ) -> None:
    args = [EXAMPLE, "--mirror", mirror.url, "--cache", tmp_path / "c", "--out", tmp_path / "a"]
    assert tcbuild("build", *args).returncode == 0
    built = (tmp_path / "a/build.json").stat()
    loaded = loaded_modules("import sys; from tcbuild.cli.commands import main; "
                            "assert main(['build', '-q', *sys.argv[1:]]) == 0", *args)
    assert "tcbuild.stages.build" in loaded  # it ran, and found the build up to date:
    assert (tmp_path / "a/build.json").stat().st_ino == built.st_ino
    assert {m for m in loaded if m.split(".")[0] in (*HEAVY, "http")} == set()
    assert {f"tcbuild.{m}" for m in ("stages.publish", "stages.iso", "tftproot.releases",
                                      "boot.iso", "sources.isoread", "fleet.view", "cli.doctor",
                                      "fleet.httptree", "tftproot.verify")} & loaded == set()


def test_unwritable_output_is_one_line(tmp_path: Path, mirror: MirrorServer) -> None:
    out = tmp_path / "out"
    out.write_text("a file where the output directory should be\n")
    result = tcbuild("build", EXAMPLE, "--mirror", mirror.url, "--cache", tmp_path / "c",
                     "--out", out)
    assert result.returncode == 1
    assert result.stderr == f"{out}: File exists\n"
    assert out.read_text() == "a file where the output directory should be\n"


def test_doctor_reports_what_is_here() -> None:
    result = tcbuild("doctor", "--json")
    assert result.returncode == 0
    found = {c["name"]: c for c in json.loads(result.stdout)}
    assert found["mksquashfs"]["found"] == shutil.which("mksquashfs")
    assert found["qemu-system-x86_64"]["package"] == "qemu-system-x86"
    assert found["pxelinux.0"]["package"] == "pxelinux"
    assert found["rsync"]["package"] == "rsync" and found["ssh"]["package"] == "openssh-client"
    for check in found.values():
        path = check["found"]
        assert path is None or Path(path).exists()
    text = tcbuild("doctor").stdout.splitlines()
    assert len(text) == len(found)
    for line in text:
        name = line.split()[0]
        expected = found[name]["found"] or f"missing (apt-get install {found[name]['package']})"
        assert f"  {expected}  [" in line


def test_library_warnings_reach_the_operator(tmp_path: Path, mirror: MirrorServer) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[tinycore]\nrelease = "15.x"\n[extensions]\ninstall = ["cyc-a"]\n')
    result = tcbuild("deps", recipe, "--mirror", mirror.url, "--cache", tmp_path / "c")
    assert result.returncode == 0
    assert result.stderr == "warning: dependency cycle: cyc-a.tcz -> cyc-b.tcz -> cyc-a.tcz\n"
    assert "└── cyc-a.tcz\n    └── cyc-b.tcz\n        └── cyc-a.tcz (cycle)" in result.stdout
