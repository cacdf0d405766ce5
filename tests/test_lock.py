"""Lock files: later fetches take exactly the locked inputs; `--locked` refuses any drift."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .kit.mirrortree import MirrorServer, MirrorTree

ROOT = Path(__file__).resolve().parent.parent


def tcbuild(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_lock_then_locked_fetches(tmp_path: Path, mirror: MirrorServer,
                                  mirror_tree: MirrorTree) -> None:
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "overlays", tmp_path / "overlays")
    recipe = tmp_path / "recipes/gameserver.toml"
    cache = tmp_path / "cache"
    locked = tcbuild("lock", recipe, "--mirror", mirror.url, "--cache", cache)
    assert locked.returncode == 0, locked.stderr
    lock = json.loads((tmp_path / "recipes/gameserver.lock").read_text())["files"]
    assert lock["15.x/x86_64/tcz/dhcp.tcz.dep"] == "absent"
    assert lock["local/nrpe.tcz"] == hashlib.sha256(
        (ROOT / "recipes/extras/nrpe.tcz").read_bytes()).hexdigest()
    assert lock["15.x/x86_64/tcz/rpcbind.tcz.dep"] == hashlib.sha256(
        mirror_tree.read("15.x/x86_64/tcz/rpcbind.tcz.dep")).hexdigest()
    ok = tcbuild("fetch", recipe, "--mirror", mirror.url, "--cache", cache, "--locked", "-q")
    assert (ok.returncode, ok.stderr) == (0, "")

    # the mirror now serves another dhcp.tcz (with a matching md5): the lock catches it
    changed = tmp_path / "mirror"
    shutil.copytree(mirror_tree.root, changed)
    tcz = changed / "15.x/x86_64/tcz/dhcp.tcz"
    tcz.write_bytes(tcz.read_bytes() + b"\0" * 4096)
    (changed / "15.x/x86_64/tcz/dhcp.tcz.md5.txt").write_text(
        f"{hashlib.md5(tcz.read_bytes()).hexdigest()}  dhcp.tcz\n")
    with MirrorServer(changed) as other:
        drift = tcbuild("fetch", recipe, "--mirror", other.url, "--cache", tmp_path / "fresh")
    assert drift.returncode == 1
    assert drift.stderr.startswith("15.x/x86_64/tcz/dhcp.tcz: differs from the lock file "
                                   f"(locked sha256 {lock['15.x/x86_64/tcz/dhcp.tcz']}, got ")

    # an extension the lock does not know: fine without --locked, refused with it
    recipe.write_text(recipe.read_text().replace('install = ["dhcp", "nfs-utils"]',
                                                 'install = ["dhcp", "nfs-utils", "cyc-a"]'))
    assert tcbuild("fetch", recipe, "--mirror", mirror.url, "--cache", cache,
                   "-q").returncode == 0
    strict = tcbuild("fetch", recipe, "--mirror", mirror.url, "--cache", cache, "--locked")
    assert strict.returncode == 1
    assert strict.stderr.splitlines() == [
        f"15.x/x86_64/tcz/{name}: not in the lock file"
        for name in ("cyc-a.tcz", "cyc-a.tcz.dep", "cyc-b.tcz", "cyc-b.tcz.dep")]
