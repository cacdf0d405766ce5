"""The Python API as a caller meets it: lock files honoured like the commands, one error boundary,
progress only when asked, warnings through logging, every type a caller needs exported."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
import typing
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import tcbuild
from tcbuild import BuildOptions, FetchOptions
from tcbuild.boot import syslinux

from .conftest import tmpfs, verified
from .kit.mirrortree import MirrorServer
from .kit.requires import require_tool

ROOT = Path(__file__).resolve().parent.parent
KERNEL_KEY = "15.x/x86_64/release/distribution_files/vmlinuz64"


def tcbuild_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcbuild", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def write_recipe(directory: Path, url: str, iso: str | None = None) -> Path:
    recipe = directory / "node.toml"
    recipe.write_text(f'[tinycore]\nrelease = "15.x"\nmirrors = ["{url}"]\n'
                      + (f'iso = "{iso}"\n' if iso else "")
                      + '[extensions]\ninstall = ["dhcp"]\n[image]\ncompression = "fast"\n')
    return recipe


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A directory no one may write in, root included: a read-only tmpfs (mounting needs root)."""
    with tmpfs(tmp_path / "ro", "ro,size=64k", "mounting a read-only tmpfs") as directory:
        yield directory


# -- lock files ----------------------------------------------------------------------------------

def test_the_library_honours_the_lock_file_like_the_commands(tmp_path: Path,
                                                            mirror: MirrorServer) -> None:
    recipe_path = write_recipe(tmp_path, mirror.url)
    recipe = tcbuild.load_recipe(recipe_path)
    fetching = FetchOptions(cache_dir=tmp_path / "cache")
    path, inputs = tcbuild.lock(recipe, fetching)
    assert path == tmp_path / "node.lock" == tcbuild.lock_path(recipe)
    assert tcbuild.read_lock(recipe) == dict(inputs.used) and KERNEL_KEY in inputs.used

    lock = json.loads(path.read_text())
    lock["files"][KERNEL_KEY] = "0" * 64  # the lock says another kernel
    path.write_text(json.dumps(lock))
    expected = f"{KERNEL_KEY}: differs from the lock file (locked sha256 {'0' * 64}, got "
    options = BuildOptions(out_dir=tmp_path / "out", fetch=fetching)
    with pytest.raises(tcbuild.ChecksumError) as build_error:
        tcbuild.build(recipe, options)
    assert str(build_error.value).startswith(expected)
    with pytest.raises(tcbuild.ChecksumError):
        tcbuild.fetch(recipe, fetching)
    (tmp_path / "tftp").mkdir()
    (tmp_path / "boot").mkdir()
    for name in {*syslinux.PXE, *syslinux.ISO}:
        (tmp_path / "boot" / name).write_bytes(b"stand-in\n")
    with pytest.raises(tcbuild.ChecksumError):
        tcbuild.publish(recipe, tmp_path / "tftp", options, bootloader_dir=tmp_path / "boot")
    with pytest.raises(tcbuild.ChecksumError):
        tcbuild.build_iso(recipe, tmp_path / "x.iso", options, tmp_path / "boot")
    assert not (tmp_path / "out").exists() and list((tmp_path / "tftp").iterdir()) == []
    command = tcbuild_cli("build", recipe_path, "--cache", tmp_path / "cache", "--out",
                          tmp_path / "out")
    assert (command.returncode, command.stderr.split(", got ")[0]) == (1, expected[:-6])

    # the library's own switches: ignore the lock file, or require it exactly (--locked)
    unlocked = BuildOptions(out_dir=tmp_path / "out",
                            fetch=FetchOptions(cache_dir=tmp_path / "cache", lock_file=False))
    assert tcbuild.build(recipe, unlocked).kernel.is_file()
    path.unlink()
    with pytest.raises(tcbuild.FetchError, match="no lock file"):
        tcbuild.fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache", locked=True))
    tcbuild.lock(recipe, fetching)
    assert tcbuild.fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache", locked=True))


# -- the error boundary --------------------------------------------------------------------------

def test_a_read_only_output_directory_is_a_file_error(tmp_path: Path, mirror: MirrorServer,
                                                      read_only: Path) -> None:
    recipe = tcbuild.load_recipe(write_recipe(tmp_path, mirror.url))
    options = BuildOptions(out_dir=read_only / "out",
                           fetch=FetchOptions(cache_dir=tmp_path / "cache"))
    with pytest.raises(tcbuild.FileError) as error:
        tcbuild.build(recipe, options)
    assert str(error.value) == f"{read_only / 'out'}: Read-only file system"
    assert error.value.path == str(read_only / "out") and error.value.exit_code == 1
    with pytest.raises(tcbuild.FileError) as published:
        tcbuild.write_server_config(tcbuild.load_inventory(ROOT / "examples/cluster.toml"),
                                    read_only)
    assert str(published.value).startswith(f"{read_only}/")
    assert str(published.value).endswith(": Read-only file system")


def test_an_unreadable_input_is_a_file_error(tmp_path: Path, mirror: MirrorServer) -> None:
    iso = tmp_path / "official.iso"
    iso.write_bytes(b"an ISO\n")
    recipe = tcbuild.load_recipe(write_recipe(tmp_path, mirror.url, iso="./official.iso"))
    iso.unlink()
    iso.mkdir()  # replaced by a directory once the recipe was read
    with pytest.raises(tcbuild.FileError) as error:
        tcbuild.fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache"))
    assert str(error.value) == f"{iso}: Is a directory"
    (tmp_path / "build.json").mkdir()  # a build directory whose build.json is not a file
    with pytest.raises(tcbuild.TcbuildError, match=r"build\.json"):
        tcbuild.load_listing(tmp_path)


def test_a_corrupt_iso_input_is_an_archive_error(tmp_path: Path, mirror: MirrorServer) -> None:
    (tmp_path / "official.iso").write_bytes(b"\0" * 32768 + b"\1CD001\1" + b"\xff" * 4000)
    recipe = tcbuild.load_recipe(write_recipe(tmp_path, mirror.url, iso="./official.iso"))
    with pytest.raises(tcbuild.ArchiveError, match=r"official\.iso"):
        tcbuild.build(recipe, BuildOptions(out_dir=tmp_path / "out",
                                           fetch=FetchOptions(cache_dir=tmp_path / "cache")))
    assert not (tmp_path / "out").exists()


def test_the_boundary_wraps_pycdlib_and_os_errors_and_lets_bugs_through(tmp_path: Path) -> None:
    import pycdlib

    from tcbuild.errors import boundary

    @boundary
    def open_iso(path: Path) -> None:
        pycdlib.PyCdlib().open(str(path))

    @boundary
    def buggy() -> None:
        raise ValueError("a bug, not a failure")

    (tmp_path / "not.iso").write_bytes(b"\0" * 40000)
    with pytest.raises(tcbuild.ArchiveError, match=r"^ISO 9660: ") as error:
        open_iso(tmp_path / "not.iso")
    assert type(error.value.__cause__).__module__.startswith("pycdlib")
    with pytest.raises(tcbuild.FileError, match=r"missing\.iso: No such file or directory$"):
        open_iso(tmp_path / "missing.iso")
    with pytest.raises(ValueError, match="a bug"):
        buggy()


def test_every_public_function_is_behind_the_boundary() -> None:
    pure = {"default_cache_dir", "lock_path"}  # no I/O, nothing to wrap
    functions = {name for name in tcbuild.__all__ if inspect.isfunction(getattr(tcbuild, name))}
    assert {"build", "publish", "rollback", "verify"} <= functions
    assert sorted(name for name in functions - pure
                  if not hasattr(getattr(tcbuild, name), "__wrapped__")) == []


def test_the_command_needs_no_oserror_handler() -> None:
    text = (ROOT / "tcbuild/cli/commands.py").read_text()
    assert "except OSError" not in text and "except TcbuildError" in text


# -- progress, warnings --------------------------------------------------------------------------

def test_progress_is_a_callback_and_no_bar_unless_asked(tmp_path: Path, mirror: MirrorServer,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    recipe = tcbuild.load_recipe(write_recipe(tmp_path, mirror.url))
    calls: list[tuple[int, int]] = []
    inputs = tcbuild.fetch(recipe, FetchOptions(cache_dir=tmp_path / "a",
                                                progress=lambda *c: calls.append(c)))
    downloaded = sum(f.size for f in inputs.files if f.origin not in ("cache", "local"))
    assert downloaded > 0 and calls[-1] == (downloaded, downloaded)
    assert all(done <= expected for done, expected in calls)
    tcbuild.fetch(recipe, FetchOptions(cache_dir=tmp_path / "b"))  # no callback: nothing drawn
    assert capfd.readouterr() == ("", "")


def test_publish_returns_its_plan_and_logs_its_warnings(site: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    (site / "overlays/gameserver/etc").mkdir()
    (site / "overlays/gameserver/etc/site.token").write_text("abc\n")
    recipe_path = site / "recipes/gameserver.toml"
    recipe_path.write_text(recipe_path.read_text().replace(
        "[vars]", "[image]\nallow_secrets = true\n\n[vars]", 1)
        + '\n[files."/etc/site.token"]\nsecret = true\n')
    options = BuildOptions(out_dir=site / "out", fetch=FetchOptions(cache_dir=site / "cache"))
    with caplog.at_level(logging.WARNING, logger="tcbuild"):
        plan = tcbuild.publish(tcbuild.load_recipe(recipe_path), site / "tftp", options,
                               bootloader_dir=site / "bootloader")
    assert isinstance(plan, tcbuild.Plan) and not plan.unchanged
    assert [r.getMessage() for r in caplog.records] == [
        f"{site / 'out/core.hts.gz'}: /etc/site.token: marked secret in the recipe; "
        "published anyway (allow_secrets)"]
    verified(site / "tftp")
    assert [r.id for r in tcbuild.releases(site / "tftp")] == [plan.release_id]
    assert tcbuild.current(site / "tftp") == {plan.release_id: {"default"}}
    assert [(r.id, configs) for r, configs in tcbuild.served(site / "tftp")] == [
        (plan.release_id, ["default"])]


def test_server_config_check_is_a_library_function(tmp_path: Path) -> None:
    inventory = tcbuild.load_inventory(ROOT / "examples/cluster.toml")
    out = tmp_path / "server"
    before = tcbuild.check_server_config(inventory, out)
    assert before and all(lines[0] == "--- /dev/null\n" for lines in before.values())
    written = tcbuild.write_server_config(inventory, out)
    assert sorted(p.name for p in written) == sorted(before)
    assert all(lines == [] for lines in tcbuild.check_server_config(inventory, out).values())
    first = written[0]
    first.write_text(first.read_text() + "# edited by hand\n")
    after = tcbuild.check_server_config(inventory, out)
    assert [name for name, lines in after.items() if lines] == [first.name]
    assert "-# edited by hand\n" in after[first.name]
    command = tcbuild_cli("server-config", ROOT / "examples/cluster.toml", "--out", out,
                          "--check")
    assert command.returncode == 1 and command.stdout == "".join(after[first.name])


# -- the surface ---------------------------------------------------------------------------------

WHERE_THEY_WORK = {  # command -> (--quiet, --json)
    "deps": (False, True), "fetch": (True, True), "lock": (True, False),
    "build": (True, True), "iso": (True, True), "publish": (True, True),
    "inspect": (False, True), "diff": (False, True), "releases": (False, True),
    "rollback": (False, False), "verify": (False, True), "boot-test": (False, True),
    "doctor": (False, True), "server-config": (False, False), "fleet": (False, True),
    "check": (True, True), "power": (False, True), "enroll": (False, True),
    "retire": (False, True), "rollout": (False, False),
}


def test_quiet_and_json_exist_exactly_where_they_work(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from tcbuild.cli.commands import main

    for command, (quiet, as_json) in WHERE_THEY_WORK.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert ("--quiet" in text, "--json" in text) == (quiet, as_json), command


def test_publish_json_and_quiet(site: Path) -> None:
    args = ["publish", site / "recipes/gameserver.toml", "--tftp", site / "tftp", "--cache",
            site / "cache", "--bootloader-dir", site / "bootloader", "--out", site / "out"]
    result = tcbuild_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["configs"] == ["default"] and shown["unchanged"] is False
    assert shown["release"] == tcbuild.releases(site / "tftp")[0].id
    again = tcbuild_cli(*args, "--quiet")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    verified(site / "tftp")
    assert tcbuild_cli("lock", site / "recipes/gameserver.toml", "--json").returncode == 2


def test_every_type_a_caller_needs_is_exported() -> None:
    missing = set()
    for name in tcbuild.__all__:
        value = getattr(tcbuild, name)
        if not inspect.isfunction(value):
            continue
        module = sys.modules[value.__module__]
        hints = typing.get_type_hints(value, vars(module))
        for hint in hints.values():
            for part in [hint, *typing.get_args(hint)]:
                for cls in [part, *typing.get_args(part)]:
                    if (inspect.isclass(cls) and cls.__module__.startswith("tcbuild.")
                            and getattr(tcbuild, cls.__name__, None) is not cls):
                        missing.add(f"{name}: {cls.__module__}.{cls.__name__}")
    assert sorted(missing) == []


def test_the_package_ships_py_typed(tmp_path: Path) -> None:
    require_tool("pip", "python3-pip")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("tcbuild-*.whl"))
    assert "tcbuild/py.typed" in zipfile.ZipFile(wheel).namelist()
