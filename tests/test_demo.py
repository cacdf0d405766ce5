"""`make demo` works: the stand-in mirror, build, publish, verify and a PXE boot, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tcbuild import tftp as pub
from tcbuild.boottest import DEFAULT_MAC

from .bootkit import KernelKit
from .conftest import ROOT


def test_demo_runs_end_to_end(tmp_path: Path, kernel_kit: KernelKit) -> None:
    tftp, work = tmp_path / "tftpboot", tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "tests.demo", "--tftp", str(tftp), "--work",
                           str(work)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert f"{tftp}: booted as {DEFAULT_MAC} in " in done.stdout
    (release,) = pub.releases(tftp)
    assert f"Loading {pub.RELEASES}/{release.id}/core.hts.gz...ok" in done.stdout
    assert "bootlocal: game-server node, build " + release.build_id[:12] in done.stdout
    assert pub.verify(tftp) == []
