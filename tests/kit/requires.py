"""What a test needs from the machine: a tool, root, OVMF. Missing, the test is skipped with the
reason, except in CI (`CI=true`), where a missing tool fails the run."""

from __future__ import annotations

import os
import shutil

import pytest

from tcbuild.errors import TcbuildError

IN_CI = os.environ.get("CI") == "true"


def require_tool(tool: str, package: str) -> None:
    """Skip a test whose tool is missing; in CI (CI=true) a missing tool fails instead."""
    if shutil.which(tool) is None:
        message = f"{tool} is not installed (apt-get install {package})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def require_ovmf() -> None:
    """Skip a UEFI boot without OVMF (Debian's ovmf) or QEMU; in CI (CI=true) fail instead."""
    from tcbuild.fleet.boottest import find_ovmf

    require_tool("qemu-system-x86_64", "qemu-system-x86")
    try:
        find_ovmf()
    except TcbuildError as e:
        if IN_CI:
            pytest.fail(str(e))
        pytest.skip(str(e))


def require_root(why: str) -> None:
    """Skip a test that needs root (e.g. network namespaces); in CI (CI=true) fail instead."""
    if os.geteuid() != 0:
        message = f"needs root: {why}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
