"""`make demo` works: the stand-in mirror, build, publish, verify, then the cluster, offline.

Run as root (as the tests are) it boots both nodes of the example cluster in namespaces, each
behind its BMC, shows the boot server's view and `tcbuild fleet`, then rolls a changed image out
over both and shows `tcbuild fleet` again; tests/test_cluster_e2e.py and tests/test_fleet_e2e.py
check the same cluster in detail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tcbuild.config.inventoryfile import load_inventory
from tcbuild.tftproot import releases as pub

from .conftest import ROOT
from .kit.bootkit import KernelKit
from .kit.requires import require_root


@pytest.mark.root
@pytest.mark.netns
def test_demo_runs_end_to_end(tmp_path: Path, kernel_kit: KernelKit) -> None:
    require_root("the demo's cluster runs in network namespaces")
    tftp, work = tmp_path / "tftpboot", tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "tests.kit.demo", "--tftp", str(tftp), "--work",
                           str(work)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    release, changed = sorted(pub.releases(tftp), key=lambda r: r.id)
    build = release.build_id[:12]
    out = done.stdout
    assert pub.default_release(tftp) == changed.id
    assert f"release {changed.id} rolled out to 2 host(s)" in out
    for host in load_inventory(ROOT / "examples/cluster.toml").hosts:
        assert f"DHCPACK on {host.ip} to {host.mac} via int0" in out
        assert f"  second address: {host.second_ip} on eth0: answers a ping from beyond" in out
        view = out[out.index(f"\n{host.name} ({host.mac}, {host.ip})"):]
        assert "  NFS share:      10.1.1.1:/srv/gameserver mounted (Ganesha serves it)" in view
        assert "  game server:    running, last master: heartbeat " in view
        assert f"bootlocal: game-server node, build {build}, release {release.id}" in view
        fleet = [line for line in out.splitlines() if line.startswith(f"{host.name}  ")]
        assert len(fleet) == 2 and f"  build {build}  release {release.id}  " in fleet[0], out
        assert f"  build {changed.build_id[:12]}  release {changed.id}  " in fleet[1], out
        assert all(line.startswith(f"{host.name}  current  booted ") for line in fleet)
    assert pub.verify(tftp) == []
