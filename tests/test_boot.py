"""Built images boot: QEMU (TCG, direct kernel boot) on the stand-in core with Debian's kernel.

Two boots cover both extension modes and both output modes: unpacked + repack, onboot + append.
The overlay's /opt/bootlocal.sh checks, inside the booted node, that the extensions' files are
there and their install scripts ran, then prints a marker the test waits for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcbuild import load_recipe
from tcbuild.sources.fetch import FetchOptions
from tcbuild.stages.build import BuildOptions, build

from .kit.bootkit import boot
from .kit.mirrortree import MirrorServer, MirrorTree

BOOTLOCAL = """#!/bin/sh
for f in /usr/local/bin/dhcp-standin /usr/local/bin/nfs-utils-standin \\
         /tmp/installed-dhcp /tmp/installed-nfs-utils /tmp/installed-libtirpc; do
    [ -e "$f" ] || { echo "BOOT-CHECK-FAILED: missing $f" >/dev/ttyS0; exit 1; }
done
echo "BOOT-MARKER {{ recipe_name }} {{ kernel_version }} tmp=$(stat -c %a /tmp)" >/dev/ttyS0
"""


@pytest.mark.parametrize(("mode", "output"), [("unpacked", "repack"), ("onboot", "append")])
def test_built_image_boots(
    tmp_path: Path, boot_mirror_tree: MirrorTree, mode: str, output: str
) -> None:
    overlay = tmp_path / "overlay/opt"
    overlay.mkdir(parents=True)
    (overlay / "bootlocal.sh.j2").write_text(BOOTLOCAL)
    (overlay / "bootlocal.sh.j2").chmod(0o755)
    recipe = tmp_path / f"{mode}.toml"
    with MirrorServer(boot_mirror_tree.root) as mirror:
        recipe.write_text(
            f'[tinycore]\nrelease = "15.x"\nmirrors = ["{mirror.url}"]\n'
            f'[extensions]\ninstall = ["dhcp", "nfs-utils"]\nmode = "{mode}"\n'
            f'[image]\noutput = "{output}"\ncompression = "fast"\n'
            '[[overlay]]\nsource = "overlay"\n'
        )
        result = build(load_recipe(recipe), BuildOptions(
            out_dir=tmp_path / "out", fetch=FetchOptions(cache_dir=tmp_path / "cache")))
    version = boot_mirror_tree.kernel_versions["x86_64/modules64.gz"]
    log = tmp_path / "serial.log"
    outcome = boot(result.kernel, result.initrd, "", log,
                   expect=f"BOOT-MARKER {mode} {version} tmp=1777", timeout=90)
    if not outcome.ok:
        pytest.fail(f"{mode}/{output} image did not boot ({outcome.reason}, "
                    f"{outcome.seconds:.1f} s):\n{outcome.tail}")
    serial = log.read_text(errors="replace")
    assert "tc-ext: dhcp installed" in serial and "BOOT-CHECK-FAILED" not in serial
    if mode == "onboot":
        assert "mounted dhcp.tcz at /tmp/tcloop/dhcp" in serial
