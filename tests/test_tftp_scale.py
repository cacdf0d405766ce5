"""A TFTP root at fleet scale: each config read once per command, every config's history in
one file (older trees' per-config files still read, folded by the next switch), each release
file hashed once by verify, a rollback's line short, `write_all` within the open-files limit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcbuild.config.inventoryfile import load_inventory
from tcbuild.errors import StateError
from tcbuild.formats import statefile
from tcbuild.tftproot import releases as pub
from tcbuild.tftproot import state, verify, writing
from tcbuild.tftproot.state import (
    HISTORIES,
    History,
    histories_text,
    history_path,
    read_histories,
)

from .test_publish import ROOT, T0, built, tree

HOSTS = 120  # per-MAC configs: enough for a count per config to stand out


def fleet(site: Path) -> Path:
    """The example inventory with HOSTS more hosts in the canary group (per-MAC configs)."""
    inventory = site / "examples/cluster.toml"
    extra = [f'[[host]]\nname = "n{i:03d}"\nmac = "52:54:00:aa:00:{i:02x}"\n'
             f'ip = "10.1.1.{20 + i}"\nsecond_ip = "172.16.1.{20 + i}"\ngroup = "canary"\n'
             for i in range(HOSTS)]
    inventory.write_text(inventory.read_text() + "\n" + "\n".join(extra))
    return inventory


def publish(site: Path, now: float, force: bool = True,
            built_then: Callable[[], object] | None = None) -> pub.Plan:
    """Build (cached), call `built_then`, plan and publish with the example's inventory."""
    loaded, result = built(site)
    if built_then is not None:
        built_then()
    plan = pub.plan(loaded, result.kernel, result.initrd,  # type: ignore[arg-type]
                    result.build_id, site / "tftp", load_inventory(site / "examples/cluster.toml"),
                    5, pub.find_bootloader(site / "bootloader"), now=now, force=force)
    with writing.locked(site / "tftp"):
        pub.execute(plan)
    return plan


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any, str], list[int]]]:
    """Count the calls of a module's function (the real one still runs)."""
    def count(module: Any, name: str) -> list[int]:
        calls = [0]
        real = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)
        return calls
    yield count


def test_publish_rollback_and_verify_read_each_config_once(
        site: Path, counted: Callable[[Any, str], list[int]]) -> None:
    """Before: `configs` parsed every config four times in one publish, each config's history
    file was read twice, verify hashed the kernel and initrd once per config."""
    fleet(site)
    publish(site, T0)
    configs = len(list((site / "tftp/pxelinux.cfg").iterdir()))
    assert configs == HOSTS + 2  # default, server2's and the fleet's
    parses: list[list[int]] = []
    reads: list[list[int]] = []

    def count() -> None:  # from the plan on, not the build's own state files
        parses.extend([counted(state, "parse"), counted(writing, "parse")])
        reads.append(counted(statefile.Fields, "read"))
    publish(site, T0 + 60, built_then=count)
    # each config once as the plan reads it, once as its new text is turned into its twin
    assert sum(n[0] for n in parses) <= 2 * configs + 5
    assert reads[0][0] < 20  # release.json files, bootloader.json, the histories: not a config's
    count()
    done = pub.rollback(site / "tftp")
    assert len(done.configs) == configs
    assert sum(n[0] for n in parses[2:]) <= 2 * configs + 5 and reads[1][0] < 20
    hashes = counted(verify, "file_sha256")
    assert verify.verify(site / "tftp") == []
    assert hashes[0] <= 4 * 2 + len(pub.find_bootloader(site / "bootloader"))


def test_histories_are_one_file_and_an_older_trees_files_are_folded(site: Path) -> None:
    """Two publishes, then the tree as an older tcbuild left it (one history file a config):
    it reads the same; a failed publish puts the old files back byte for byte; the next one
    folds them into history.json and removes them, and rollback still steps back."""
    fleet(site)
    first, second = publish(site, T0), publish(site, T0 + 60)
    tftp = site / "tftp"
    histories = read_histories(tftp)
    assert len(histories) == HOSTS + 2
    assert {h.booted for h in histories.values()} == {(first.release_id, second.release_id)}
    shared = (tftp / HISTORIES).read_text()
    assert shared.count(first.release_id) == 1  # one list of releases, every config its index
    for name, history in histories.items():  # as an older tcbuild wrote them
        history_path(tftp, name).parent.mkdir(parents=True, exist_ok=True)
        history_path(tftp, name).write_bytes(history.text())
    (tftp / HISTORIES).unlink()
    assert read_histories(tftp) == histories
    assert History.read(tftp, "default") == histories["default"]

    loaded, result = built(site)
    plan = pub.plan(loaded, result.kernel, result.initrd,  # type: ignore[arg-type]
                    result.build_id, tftp, load_inventory(site / "examples/cluster.toml"),
                    5, pub.find_bootloader(site / "bootloader"), now=T0 + 120, force=True)
    kept = tree(tftp)
    with writing.locked(tftp):
        undo = pub.before(plan)
        pub.write_release(plan)
        pub.make_current(plan)
        assert not list((tftp / state.HISTORY).glob("*.json"))
        undo.restore()
    kept.pop("tcbuild/.lock", None)
    after = tree(tftp)
    after.pop("tcbuild/.lock", None)
    assert after == kept

    third = publish(site, T0 + 180)
    assert not list((tftp / state.HISTORY).glob("*.json"))
    assert {h.booted for h in read_histories(tftp).values()} == {
        (first.release_id, second.release_id, third.release_id)}
    done = pub.rollback(tftp)
    assert (done.was, done.now) == (third.release_id, second.release_id)
    assert verify.verify(tftp) == []


def test_the_histories_file_is_deterministic_and_checked(tmp_path: Path) -> None:
    a, b = History("b", ("r1", "r2")), History("a", ("r1",))
    text = histories_text({"b": a, "a": b, "c": History("c", ("r1", "r2"))})
    assert text == histories_text({"c": History("c", ("r1", "r2")), "a": b, "b": a})
    (tmp_path / HISTORIES).parent.mkdir(parents=True)
    (tmp_path / HISTORIES).write_bytes(text)
    assert read_histories(tmp_path) == {"a": b, "b": a, "c": History("c", ("r1", "r2"))}
    for bad, says in (
            (text.replace(b'"version": 2', b'"version": 3'), "version: 3 is not a version"),
            (text.replace(b'"c": 1', b'"c": 7'), "configs.c: names entry 7 of booted"),
            (text.replace(b'"r2"', b'"a/b"'), "booted: entry 1 is not a list of release ids")):
        (tmp_path / HISTORIES).write_bytes(bad)
        with pytest.raises(StateError) as e:
            read_histories(tmp_path)
        assert str(e.value).startswith(f"{tmp_path / HISTORIES}: ") and says in str(e.value)


def test_a_rollback_of_many_configs_is_one_short_line(tmp_path: Path) -> None:
    few = pub.Rollback(tmp_path, "R2", "R1", ("default", "01-aa"))
    assert few.describe() == f"{tmp_path}: default, 01-aa now boot R1 (was R2)"
    one = pub.Rollback(tmp_path, "R2", "R1", ("default",))
    assert one.describe() == f"{tmp_path}: default now boots R1 (was R2)"
    many = pub.Rollback(tmp_path, "R2", "R1", tuple(f"01-{i:04x}" for i in range(5000)))
    assert many.describe() == (f"{tmp_path}: 5000 configs (01-0000, 01-0001, 01-0002, ...) "
                               "now boot R1 (was R2)")


def test_write_all_replacing_files_stays_within_the_open_files_limit(tmp_path: Path) -> None:
    """The files replaced are held open across the renames, but only as many as the limit
    leaves room for beside the temp files: holding all 700 here would need 1,400 descriptors
    (EMFILE under a limit of 1,000)."""
    script = f"""
import resource, sys
from pathlib import Path
from tcbuild.atomic import write_all
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard != resource.RLIM_INFINITY and hard < 1000:
    sys.exit(77)
resource.setrlimit(resource.RLIMIT_NOFILE, (1000, 1000))
root = Path({str(tmp_path)!r})
for round in (b"old", b"new"):
    write_all([(root / f"c{{i}}", round + f" {{i}}\\n".encode()) for i in range(700)])
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    if done.returncode == 77:
        pytest.skip("the hard limit on open files is below 1,000 here")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"c{i}" for i in range(700))
    assert all((tmp_path / f"c{i}").read_text() == f"new {i}\n" for i in (0, 350, 699))
