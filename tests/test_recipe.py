"""Recipes: the example is accepted as written; every class of problem is reported at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import tcbuild
from tcbuild import ExtensionMode, Flavor, InputError, RecipeError, load_recipe
from tcbuild.recipe import FileAttributes

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value.problems


def test_example_recipe_is_accepted_as_written() -> None:
    recipe = tcbuild.load_recipe(ROOT / "recipes/gameserver.toml")
    assert recipe.release == "15.x" and recipe.major == 15
    assert recipe.flavor is Flavor.COREPURE64
    assert recipe.mirrors == ("http://repo.tinycorelinux.net/",
                              "http://distro.ibiblio.org/tinycorelinux/")
    assert recipe.install == ("dhcp.tcz", "nfs-utils.tcz")
    assert recipe.local == (ROOT / "recipes/extras/nrpe.tcz",)
    assert recipe.mode is ExtensionMode.UNPACKED
    assert [o.source for o in recipe.overlays] == [ROOT / "overlays/gameserver"]
    assert recipe.vars["internal_iface"] == "eth1" and recipe.vars["nfs_retries"] == 10
    assert recipe.inventory == ROOT / "examples/cluster.toml"
    assert recipe.append == "base norestore nodhcp cron console=tty0 console=ttyS0,115200"
    assert (recipe.initrd_name, recipe.serial, recipe.timeout) == ("core.hts.gz", "0 115200", 0)
    assert recipe.files["opt/bootlocal.sh"] == FileAttributes(0o775, "root", "staff")
    assert recipe.name == "gameserver"


def test_recipe_is_immutable(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, '[tinycore]\nrelease = "15.x"\n[vars]\na = "1"\n'))
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.release = "14.x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        recipe.vars["a"] = "2"  # type: ignore[index]


def test_minimal_recipe_gets_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, '[tinycore]\nrelease = "14.x"\n'))
    assert recipe.flavor is Flavor.COREPURE64
    assert recipe.mirrors == ("http://repo.tinycorelinux.net/",)
    assert recipe.install == () and recipe.local == () and recipe.overlays == ()
    assert recipe.initrd_name == "core.hts.gz"


@pytest.mark.parametrize(
    ("flavor", "build", "kernel", "parts"),
    [
        ("corepure64", "x86_64", "vmlinuz64", ("corepure64.gz",)),
        ("core", "x86", "vmlinuz", ("core.gz",)),
        ("core64", "x86", "vmlinuz64", ("rootfs.gz", "modules64.gz")),
    ],
)
def test_flavors_name_their_files(
    tmp_path: Path, flavor: str, build: str, kernel: str, parts: tuple[str, ...]
) -> None:
    recipe = load_recipe(write(tmp_path, f'[tinycore]\nrelease = "15.x"\nflavor = "{flavor}"\n'))
    assert (recipe.flavor.build, recipe.flavor.kernel, recipe.flavor.core_parts) == (
        build, kernel, parts)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """
[tinycore]
release = 15
flavor = "corepure"
mirrors = ["ftp://example.org/", 3]
colour = "blue"

[extensions]
install = ["dhcp", "bad/name", "dhcp.tcz", 7]
local = ["missing.tcz", "notes.txt"]
mode = "lazy"

[[overlay]]
source = "no/such/dir"
target = "/"

[vars]
"bad-name" = "x"
list = [1, 2]

[boot]
initrd_name = "sub/core.gz"
appendix = "x"

[extra]
""")
    found = problems(path)
    expected = [
        "tinycore.release: expected a string, got an integer",
        "tinycore.flavor: 'corepure' is not one of: core | corepure64 | core64",
        "tinycore.mirrors[0]: 'ftp://example.org/' is not an http:// or https:// URL",
        "tinycore.mirrors[1]: expected a string, got an integer",
        "tinycore.colour: unknown key",
        "extensions.install[1]: 'bad/name' is not an extension name",
        "extensions.install[2]: 'dhcp.tcz' is listed twice (also at extensions.install[0])",
        "extensions.install[3]: expected a string, got an integer",
        "extensions.local[0]: file 'missing.tcz' does not exist",
        "extensions.local[1]: directory 'notes.txt' does not exist",
        "extensions.mode: 'lazy' is not one of: unpacked | onboot",
        "overlay[0].source: directory 'no/such/dir' does not exist",
        "overlay[0].target: unknown key",
        "vars.bad-name: not a valid variable name",
        "vars.list: expected a string, number or boolean, got an array",
        "boot.initrd_name: 'sub/core.gz' is not a plain file name",
        "boot.appendix: unknown key (did you mean 'append'?)",
        "extra: unknown key",
    ]
    for fragment in expected:
        assert any(line.startswith(f"{path}: ") and fragment in line for line in found), (
            fragment, found)
    assert len(found) == len(expected), found


def test_missing_tinycore_table(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "[boot]\nappend = 'base'\n")) == [
        f"{tmp_path / 'x.toml'}: tinycore: missing table"]


def test_release_must_be_a_series(tmp_path: Path) -> None:
    found = problems(write(tmp_path, '[tinycore]\nrelease = "15.0"\n'))
    assert found == [f"{tmp_path / 'x.toml'}: tinycore.release: '15.0' is not a release series "
                     "like '15.x'"]


def test_wrong_table_types(tmp_path: Path) -> None:
    found = problems(write(tmp_path, 'tinycore = "15.x"\noverlay = "dir"\nvars = 3\n'))
    assert [line.split(": ", 1)[1] for line in found] == [
        "tinycore: expected a table, got a string",
        "overlay: expected an array of tables ([[overlay]]), got a string",
        "vars: expected a table, got an integer",
    ]


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[tinycore]\nrelease = "15.x"\nflavor = \n')
    with pytest.raises(InputError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}:3:10: invalid TOML: ")
    assert info.value.exit_code == 2


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.toml: cannot read recipe: No such file"):
        load_recipe(tmp_path / "nope.toml")


def test_paths_are_relative_to_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "overlays/site").mkdir(parents=True)
    (tmp_path / "recipes/extras").mkdir(parents=True)
    (tmp_path / "recipes/extras/a.tcz").write_bytes(b"x")
    path = write(tmp_path / "recipes", '[tinycore]\nrelease = "15.x"\n'
                 '[extensions]\nlocal = ["extras/a.tcz"]\n'
                 '[[overlay]]\nsource = "../overlays/site"\n')
    recipe = load_recipe(path)
    assert recipe.local == (tmp_path / "recipes/extras/a.tcz",)
    assert recipe.overlays[0].source == tmp_path / "overlays/site"


def test_local_extension_also_installed_from_mirror(tmp_path: Path) -> None:
    (tmp_path / "a.tcz").write_bytes(b"x")
    found = problems(write(tmp_path, '[tinycore]\nrelease = "15.x"\n'
                           '[extensions]\ninstall = ["a"]\nlocal = ["a.tcz"]\n'))
    assert found == [f"{tmp_path / 'x.toml'}: extensions.local: 'a.tcz' is also in "
                     "extensions.install"]


def test_with_mirrors_replaces_the_list(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, '[tinycore]\nrelease = "15.x"\n'))
    other = recipe.with_mirrors(("http://127.0.0.1:8080",))
    assert other.mirrors == ("http://127.0.0.1:8080/",) and recipe.mirrors != other.mirrors
    with pytest.raises(InputError, match="file:///x: a mirror must be an http"):
        recipe.with_mirrors(("file:///x",))


def test_image_and_files_tables(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, """
[tinycore]
release = "15.x"
[image]
output = "repack"
compression = "fast"
remove = ["/usr/share/doc/*", "usr/local/share/man"]
[files."/opt/bootlocal.sh"]
mode = "0775"
owner = "root"
group = "staff"
[files."/etc/motd"]
mode = 0o600
group = 50
"""))
    assert recipe.compression == "fast" and recipe.output == "repack"
    assert recipe.remove == ("usr/share/doc/*", "usr/local/share/man")
    assert recipe.files["opt/bootlocal.sh"] == FileAttributes(0o775, "root", "staff")
    assert recipe.files["etc/motd"] == FileAttributes(0o600, None, 50)


def test_image_and_files_problems(tmp_path: Path) -> None:
    found = problems(write(tmp_path, """
[tinycore]
release = "15.x"
[image]
output = "append"
compression = "tiny"
remove = ["../etc", "bin/*"]
[files."opt/x"]
mode = "0775"
[files."/opt/y"]
mode = "rwx"
owner = "Root User"
colour = 1
"""))
    assert [line.split(": ", 1)[1] for line in found] == [
        "image.compression: 'tiny' is not one of: small | fast",
        "image.remove[0]: '../etc' is not a path or glob inside the image",
        'image.remove: append mode cannot remove base entries (use output = "repack")',
        'files."opt/x": expected an absolute path inside the image, like "/opt/bootlocal.sh"',
        'files."/opt/y".colour: unknown key; expected one of: group, mode, owner, secret',
        'files."/opt/y".mode: \'rwx\' is not a mode like "0755" or 0o755',
        "files.\"/opt/y\".owner: 'Root User' is not a user or group name or number",
    ]


def test_local_extension_directory(tmp_path: Path) -> None:
    (tmp_path / "nrpe/usr/local").mkdir(parents=True)
    recipe = load_recipe(write(tmp_path, '[tinycore]\nrelease = "15.x"\n'
                               '[extensions]\nlocal = ["nrpe"]\n'))
    assert recipe.local == (tmp_path / "nrpe",)


def test_boot_labels_prompt_and_their_problems(tmp_path: Path) -> None:
    from tcbuild.pxelinux import for_recipe, parse, render

    recipe = load_recipe(write(tmp_path, """
[tinycore]
release = "15.x"
[boot]
append = "base nodhcp console=ttyS0,115200"
serial = "0 115200"
timeout = 50
prompt = true
[boot.labels]
rescue = "base nodhcp text"
debug = "base nodhcp loglevel=7"
"""))
    assert dict(recipe.labels) == {"debug": "base nodhcp loglevel=7", "rescue": "base nodhcp text"}
    config = parse(render(for_recipe(recipe, "k", "i")), "cfg")
    assert (config.default, config.serial, config.timeout, config.prompt) == (
        "tinycore", "0 115200", 50, True)
    assert [(lb.name, lb.kernel, lb.initrd, lb.append) for lb in config.labels] == [
        ("tinycore", "k", "i", "base nodhcp console=ttyS0,115200"),
        ("debug", "k", "i", "base nodhcp loglevel=7"),
        ("rescue", "k", "i", "base nodhcp text"),
    ]
    assert for_recipe(recipe, "k", "i", "other").label("tinycore").append == "other"

    found = problems(write(tmp_path, """
[tinycore]
release = "15.x"
[boot]
prompt = "yes"
[boot.labels]
tinycore = "x"
"a b" = "x"
ok = 3
"""))
    assert [line.split(": ", 1)[1] for line in found] == [
        "boot.prompt: expected true or false, got a string",
        "boot.labels.tinycore: a label is 1-32 letters, digits, '_', '.', '-' and not "
        "'tinycore' (the default label)",
        "boot.labels.a b: a label is 1-32 letters, digits, '_', '.', '-' and not "
        "'tinycore' (the default label)",
        "boot.labels.ok: expected a kernel line (a string), got an integer",
    ]
