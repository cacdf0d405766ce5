"""Remote roots without a network: the URL, the ssh and rsync command lines, the push planned
between two listings of a real published tree, and its POSIX-sh steps run by the real `sh` and
`rsync` on a local stand-in of the far side (tests/test_remote_publish.py runs them over SSH)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tcbuild.errors import InputError
from tcbuild.tftproot import push as pushing
from tcbuild.tftproot import releases as pub
from tcbuild.tftproot.remote import (
    Remote,
    parse_root,
    rsync_argv,
    ssh_argv,
    ssh_base,
    ssh_failure,
    status_error,
)

from .kit.requires import require_tool
from .test_publish import T0, publish_at


def test_urls_parse_into_remote_roots_and_paths_stay_paths() -> None:
    assert parse_root("ssh://boot1/srv/tftp") == Remote("boot1", "/srv/tftp")
    assert parse_root("ssh://ops@10.0.0.2:2222/srv/tftp/") == Remote("10.0.0.2", "/srv/tftp",
                                                                     "ops", 2222)
    assert parse_root("build/tftpboot") == Path("build/tftpboot")
    assert str(parse_root("ssh://ops@boot1:22/srv/tftp")) == "ssh://ops@boot1:22/srv/tftp"
    assert Remote("boot1", "/srv/tftp", "ops", 22).key() == "ops_boot1_22_srv_tftp"


@pytest.mark.parametrize(("url", "says"), [
    ("ssh://boot1", "no path"),
    ("ssh:///srv/tftp", "not a host name"),
    ("ssh://boot1:0/srv", "not a port: '0'"),
    ("ssh://boot1:http/srv", "not a port"),
    ("ssh://-oProxyCommand=x/srv", "not a host name"),
    ("ssh://boot1/srv/../etc", "plain"),
    ("ssh://boot1/srv/tftp root", "plain"),
    ("ssh://bad user@boot1/srv", "not a user name"),
    ("http://boot1/srv", "not a directory or an ssh://"),
])
def test_a_bad_url_is_one_line_naming_it(url: str, says: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_root(url)
    assert str(caught.value).startswith(f"--tftp {url}: ")
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_command_lines_add_batch_mode_and_nothing_about_host_keys(tmp_path: Path) -> None:
    remote = Remote("boot1", "/srv/tftp", "ops", 2222)
    base = ssh_base({"TCBUILD_SSH": "ssh -F '/etc/my ssh/config'"})
    assert base == ["ssh", "-F", "/etc/my ssh/config"]
    assert ssh_base({}) == ["ssh"]
    argv = ssh_argv(base, remote, tmp_path / "s", "true", master=True)
    assert argv[:3] == base and argv[-2:] == ["ops@boot1", "true"]
    assert "BatchMode=yes" in argv and "ControlMaster=yes" in argv and argv[-4:-2] == ["-p",
                                                                                       "2222"]
    assert not any("StrictHostKeyChecking" in part for part in argv)
    rsync = rsync_argv(base, remote, tmp_path / "s", "a/", "ops@boot1:/srv/tftp/")
    shell = rsync[rsync.index("-e") + 1]
    assert shell.startswith("ssh -F '/etc/my ssh/config' -o BatchMode=yes")
    assert "ControlMaster=no" in shell and "--stats" in rsync


def test_failures_are_one_line_naming_the_root() -> None:
    remote = Remote("boot1", "/srv/tftp")
    unknown = ssh_failure(remote, 255, "debug\nHost key verification failed.\n", "connecting")
    assert str(unknown).startswith("ssh://boot1/srv/tftp: connecting failed (ssh): Host key "
                                   "verification failed. (the host key is not in known_hosts")
    assert "refused" in str(ssh_failure(remote, 255, "root@boot1: Permission denied "
                                        "(publickey).", "connecting"))
    assert status_error(remote, "tcbuild-no-root", 30, "ssh boot1").exit_code == 2
    missing = status_error(remote, "tcbuild-missing rsync", 30, "ssh boot1")
    assert str(missing) == ("ssh://boot1/srv/tftp: rsync is not installed on the far side (or "
                            "not in the PATH of that login): it is needed there")


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))
            if not p.relative_to(root).as_posix().startswith(("tcbuild/staging-",
                                                               "tcbuild/.lock"))}


def far_side(mirror: Path, far: Path, push: pushing.Push) -> None:
    """Phase 1 on a local stand-in of the far side: prep, rsync, check (all real)."""
    subprocess.run(["sh", "-s"], input=pushing.prep_script(push, str(far)), text=True,
                   check=True)
    listing = mirror.parent / "files"
    listing.write_text("".join(f"{rel}\n" for rel in push.send))
    subprocess.run(["rsync", "-aH", "--ignore-times", f"--files-from={listing}", f"{mirror}/",
                    f"{far}/{push.staging}/tree/"], check=True)
    subprocess.run(["sh", "-c", pushing.check_command(push, str(far))], check=True)


def published_and_copied(site: Path) -> tuple[Path, Path, pushing.Manifest]:
    """A root published (the mirror), its copy (the far side), and the mirror's manifest."""
    require_tool("rsync", "rsync")
    mirror = site / "tftp"
    publish_at(site, T0, inventory=True)
    far = site / "far"
    shutil.copytree(mirror, far, symlinks=True)
    return mirror, far, pushing.scan(mirror)


def test_a_push_plans_only_what_changed_and_its_scripts_switch_and_undo(site: Path) -> None:
    mirror, far, before = published_and_copied(site)
    was = tree(far)
    changed = site / "overlays/gameserver/opt/bootlocal.sh.j2"
    changed.write_text(changed.read_text() + "echo changed\n")
    plan = publish_at(site, T0 + 60, inventory=True, keep=1)
    push = pushing.plan_push(before, pushing.scan(mirror), mirror, "t1", plan.prune)
    new = f"{pub.RELEASES}/{plan.release_id}"
    assert push.releases == (new,)
    names = [rel for rel, _ in push.files]
    assert names.index("tcbuild/history.json") < names.index("ipxe/default.ipxe") \
        < names.index("pxelinux.cfg/default")
    assert push.link == {f"{new}/vmlinuz64": next(rel for rel in before
                                                   if rel.endswith("/vmlinuz64"))}
    assert f"{new}/vmlinuz64" not in push.send and f"{new}/core.hts.gz" in push.send
    assert push.basis[f"{new}/core.hts.gz"].endswith("/core.hts.gz")  # sent as a difference
    assert push.prune == ()  # keep=1 never prunes what a config would roll back to
    far_side(mirror, far, push)
    assert tree(far) == was  # phase 1 changes nothing that is served
    script = (far / push.staging / "switch.sh").read_text().splitlines()
    cut = next(i for i, line in enumerate(script) if line.startswith("put ")) + 2
    half = site / "half.sh"
    half.write_text("\n".join(script[:cut]) + "\n")  # the server lost between two renames
    subprocess.run(["sh", str(half)], check=True)
    assert tree(far) != was
    subprocess.run(["sh", str(far / push.staging / "undo.sh")], check=True)
    assert tree(far) == was and not (far / push.staging).exists()
    far_side(mirror, far, push)
    subprocess.run(["sh", str(half)], check=True)
    subprocess.run(["sh", str(far / push.staging / "switch.sh")], check=True)  # completes it
    assert tree(far) == tree(mirror)
    assert not list((far / "tcbuild").glob("staging-*"))
    assert pushing.plan_push(pushing.scan(mirror), pushing.scan(mirror), mirror, "t2").empty


def test_a_push_that_only_removes_checks_nothing_and_switches(site: Path) -> None:
    """A rollout's last step drops per-MAC configs: nothing is sent, nothing to checksum."""
    mirror, far, before = published_and_copied(site)
    dropped = sorted((mirror / "pxelinux.cfg").glob("01-*"))
    assert dropped
    for path in dropped:
        path.unlink()
    push = pushing.plan_push(before, pushing.scan(mirror), mirror, "t3")
    assert not push.send and not push.sums and push.delete
    far_side(mirror, far, push)
    subprocess.run(["sh", str(far / push.staging / "switch.sh")], check=True)
    assert tree(far) == tree(mirror)
