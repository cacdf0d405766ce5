"""Recipes: a TOML file read into a frozen, validated `Recipe`, every problem reported at once."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from ..errors import InputError, RecipeError
from ..formats.compress import Compression
from ..formats.manifest import MANIFEST
from ..formats.tomlfile import (
    CONTROL,
    TEMPLATE_TEXT,
    control_problem,
    key_path,
    type_name,
)

DEFAULT_MIRRORS = ("http://repo.tinycorelinux.net/",)
EXTENSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
RELEASE = re.compile(r"^(\d+)\.x$")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ISO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.iso$", re.IGNORECASE)
ISO_MAJOR = re.compile(r"-(\d+)\.\d")
RELEASE_JSON = "release.json"
"""A published release's own file, beside its kernel and initrd."""
DEFAULT_LABEL = "tinycore"
"""The boot label of the recipe's own kernel line (pxelinux and isolinux DEFAULT)."""
LABEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
"""An output file name: pxelinux reads a blank as the end of a name and a comma as a second
initrd; a leading dot hides a file (and marks tcbuild's temporary ones)."""


class Flavor(StrEnum):
    """Which kernel and core files a recipe boots, and from which mirror tree."""

    CORE = "core"
    COREPURE64 = "corepure64"
    CORE64 = "core64"

    @property
    def build(self) -> str:
        """The mirror tree: core64 is a 64-bit kernel over the 32-bit x86 userland."""
        return "x86_64" if self is Flavor.COREPURE64 else "x86"

    @property
    def kernel(self) -> str:
        return "vmlinuz" if self is Flavor.CORE else "vmlinuz64"

    @property
    def core_parts(self) -> tuple[str, ...]:
        """Distribution files concatenated, in order, to make the initramfs."""
        return {
            Flavor.CORE: ("core.gz",),
            Flavor.COREPURE64: ("corepure64.gz",),
            Flavor.CORE64: ("rootfs.gz", "modules64.gz"),
        }[self]


class ExtensionMode(StrEnum):
    """How extensions go into the image: merged into the root, or loaded by tce-setup at boot."""

    UNPACKED = "unpacked"
    ONBOOT = "onboot"


class CheckPolicy(StrEnum):
    """What a build does with what `tcbuild check` finds: print it, fail on it, or not look."""

    WARN = "warn"
    ERROR = "error"
    OFF = "off"


class OutputMode(StrEnum):
    """`repack` rewrites the whole initramfs; `append` adds one segment after the untouched base."""

    REPACK = "repack"
    APPEND = "append"


@dataclass(frozen=True)
class FileAttributes:
    """Owner and mode the recipe sets for one overlay path (None: the default)."""

    mode: int | None = None
    owner: str | int | None = None
    group: str | int | None = None
    secret: bool = False  # publish refuses an image holding it (TFTP has no authentication)


@dataclass(frozen=True)
class IsoInput:
    """An official Tiny Core ISO the kernel and core are taken from (its `/boot`)."""

    name: str  # the file name, e.g. "CorePure64-15.0.iso"
    path: Path | None = None  # a local file; None: the mirror's `<N>.x/<build>/release/<name>`


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tar.xz", ".zip", ".cpio")
"""An overlay source with one of these is an archive of a tree (read by libarchive)."""


def archive_suffix(path: Path) -> str | None:
    """`.tar.gz` for `site.tar.gz`; None when the name is not an overlay archive's."""
    name = path.name.lower()
    return next((suffix for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True)
                 if name.endswith(suffix)), None)


@dataclass(frozen=True)
class Overlay:
    """A directory tree, or an archive of one, copied into the image root."""

    source: Path


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Paths are relative to the working directory, as the recipe's own was."""

    path: Path
    release: str
    flavor: Flavor
    mirrors: tuple[str, ...]
    install: tuple[str, ...]
    local: tuple[Path, ...]
    mode: ExtensionMode
    overlays: tuple[Overlay, ...]
    vars: Mapping[str, str | int | float | bool]
    append: str
    initrd_name: str
    output: OutputMode = OutputMode.REPACK
    compression: Compression = Compression.SMALL
    remove: tuple[str, ...] = ()
    files: Mapping[str, FileAttributes] = field(default_factory=lambda: MappingProxyType({}))
    inventory: Path | None = None  # the cluster inventory whose values the templates see
    allow_secrets: bool = False  # publish only warns about secrets in the image
    serial: str | None = None  # pxelinux SERIAL, e.g. "0 115200"
    timeout: int = 0  # pxelinux TIMEOUT, tenths of a second
    iso: IsoInput | None = None  # kernel and core from an official ISO, not distribution_files
    prompt: bool = False  # pxelinux PROMPT: show the boot: prompt (with timeout, to pick a label)
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Extra boot labels: name -> kernel line, same kernel and initrd as the default."""
    check: CheckPolicy = CheckPolicy.WARN  # the "will it run?" check at the end of a build
    check_ignore: tuple[str, ...] = ()  # image paths (globs) whose findings are deliberate

    def __post_init__(self) -> None:
        """Every value obeys the rules `load_recipe` applies, however the recipe was made
        (`dataclasses.replace`, the library API): the same checks, the same kind of error."""
        problems = [f"{self.path}: {key}: {message}" for key, message in _problems(self)]
        if problems:
            raise RecipeError(problems)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def major(self) -> int:
        return int(self.release.split(".")[0])

    def with_mirrors(self, mirrors: tuple[str, ...]) -> Recipe:
        """The same recipe served from other mirrors (the CLI's `--mirror`)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return Recipe(**{**fields, "mirrors": tuple(normalize_mirror(m) for m in mirrors)})


def extension_filename(name: str) -> str:
    """`dhcp` and `dhcp.tcz` both name `dhcp.tcz`."""
    return name if name.endswith(".tcz") else f"{name}.tcz"


def normalize_mirror(url: str) -> str:
    """A mirror base URL with exactly one trailing slash; only http(s) is accepted."""
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url) or CONTROL.search(url):
        shown = json.dumps(url) if CONTROL.search(url) else url
        raise InputError(f"{shown}: a mirror must be an http:// or https:// URL")
    return url.rstrip("/") + "/"


def label_problem(name: str) -> str | None:
    """What is wrong with an extra boot label's name (a `LABEL` line of its own)."""
    if LABEL_NAME.fullmatch(name) and name != DEFAULT_LABEL:
        return None
    return (f"a label is 1-32 letters, digits, '_', '.', '-' and not '{DEFAULT_LABEL}' (the "
            "default label)")


def initrd_name_problem(name: str, flavor: Flavor, recipe_name: str) -> str | None:
    """What is wrong with an initrd's name: it must be plain, and none of the other files beside
    it in a build directory or a release (an ISO 9660 name has one case: so has the check)."""
    if not FILE_NAME.fullmatch(name):
        return (f"'{name}' is not a plain file name (up to 128 letters, digits and . _ + -, "
                "starting with a letter or digit)")
    reserved = {
        flavor.kernel: "the kernel's name",
        MANIFEST: "the build's manifest",
        RELEASE_JSON: "a release's manifest in the TFTP root",
        f"{recipe_name}.iso": "the name of the recipe's ISO",
        f"{recipe_name}.lock": "the name of the recipe's lock file",
    }
    return next((f"'{name}' is {why}" for taken, why in reserved.items()
                 if taken.lower() == name.lower()), None)


IPXE_OPERATORS = ("&&", "||", ";")
"""Words that end an iPXE command and start the next (exec.c `command_terminator`)."""
SERIAL = re.compile(r"[0-3]( \d{3,6})?")
OWNER = re.compile(r"[a-z_][a-z0-9_-]*\$?")
TIMEOUT_MAX = 36000  # pxelinux TIMEOUT: an hour, in tenths of a second


def ipxe_problem(text: str) -> str | None:
    """What iPXE would read as its own syntax in a kernel line of a script: `${` expands a
    setting, a word `&&`, `||` or `;` chains a command, a word starting with `#` drops the rest
    of the line, a trailing `\\` joins the next line (a `:` matters only at a line's start,
    where tcbuild writes `kernel`)."""
    if "${" in text:
        return "'${' would be expanded by iPXE (a setting)"
    for word in text.split():
        if word in IPXE_OPERATORS:
            return f"'{word}' would chain a command of its own in an iPXE script"
        if word.startswith("#"):
            return f"'{word}' would start a comment in an iPXE script (the rest is lost)"
    if text.endswith("\\"):
        return "a trailing '\\' would join the next line of an iPXE script"
    return None


def kernel_line_problem(text: str) -> str | None:
    """What is wrong with a kernel line (`boot.append`, a label's, a group's): it is written
    into pxelinux and isolinux configs and iPXE scripts."""
    return control_problem(text) or ipxe_problem(text)


def release_problem(release: str) -> str | None:
    return None if RELEASE.match(release) else f"'{release}' is not a release series like '15.x'"


def serial_problem(serial: object) -> str | None:
    if isinstance(serial, str) and SERIAL.fullmatch(serial):
        return None
    return f"{serial!r} is not a pxelinux SERIAL line like \"0 115200\""


def timeout_problem(timeout: object) -> str | None:
    if isinstance(timeout, int) and not isinstance(timeout, bool) and \
            0 <= timeout <= TIMEOUT_MAX:
        return None
    return f"{timeout!r} is not a time in tenths of a second"


def pattern_problem(pattern: str, climbs: bool = True) -> str | None:
    """A path or glob inside the image (`image.remove`: no `..`; `image.check_ignore`)."""
    normalized = pattern.strip("/")
    if normalized and not (climbs and ".." in normalized.split("/")):
        return None
    return f"'{pattern}' is not a path or glob inside the image"


def mode_problem(mode: object) -> str | None:
    if isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o7777:
        return None
    return f"{mode!r} is not a mode like \"0755\" or 0o755"


def owner_problem(owner: object) -> str | None:
    if isinstance(owner, int) and not isinstance(owner, bool) and 0 <= owner < 2**32:
        return None
    if isinstance(owner, str) and OWNER.fullmatch(owner):
        return None
    return f"{owner!r} is not a user or group name or number"


def image_path_problem(path: str) -> str | None:
    """A `[files]` key: an absolute path inside the image."""
    normalized = path.strip("/")
    if path.startswith("/") and normalized and ".." not in normalized.split("/"):
        return None
    return "expected an absolute path inside the image, like \"/opt/bootlocal.sh\""


def var_problem(name: str, value: object) -> str | None:
    if not VAR_NAME.match(name):
        return "not a valid variable name (letters, digits, _)"
    if not isinstance(value, str | int | float | bool):
        return f"expected a string, number or boolean, got {type_name(value)}"
    return control_problem(value, TEMPLATE_TEXT) if isinstance(value, str) else None


def _problems(recipe: Recipe) -> Iterator[tuple[str, str]]:
    """(key, problem) for every value of a recipe a reader would refuse."""
    for key, value, kind in (("tinycore.flavor", recipe.flavor, Flavor),
                             ("extensions.mode", recipe.mode, ExtensionMode),
                             ("image.output", recipe.output, OutputMode),
                             ("image.compression", recipe.compression, Compression),
                             ("image.check", recipe.check, CheckPolicy)):
        if not isinstance(value, kind):
            yield key, f"{value!r} is not one of: {' | '.join(e.value for e in kind)}"
    checks: list[tuple[str, str | None]] = [
        ("tinycore.release", release_problem(recipe.release)),
        ("boot.serial", None if recipe.serial is None
         else control_problem(recipe.serial) or serial_problem(recipe.serial)),
        ("boot.timeout", timeout_problem(recipe.timeout)),
        ("boot.append", kernel_line_problem(recipe.append)),
        ("boot.initrd_name", initrd_name_problem(recipe.initrd_name, recipe.flavor,
                                                 recipe.name)
         if isinstance(recipe.flavor, Flavor) else None),  # else: reported above
    ]
    for i, url in enumerate(recipe.mirrors):
        checks.append((f"tinycore.mirrors[{i}]", None if _is_mirror(url) else
                       f"'{url}' is not an http:// or https:// URL ending in '/'"))
    for i, name in enumerate(recipe.install):
        checks.append((f"extensions.install[{i}]", None if EXTENSION_NAME.match(name)
                       and name.endswith(".tcz") else f"'{name}' is not an extension name"))
    paths: list[tuple[str, Path | None]] = [(f"extensions.local[{i}]", p)
                                            for i, p in enumerate(recipe.local)]
    paths += [(f"overlay[{i}].source", o.source) for i, o in enumerate(recipe.overlays)]
    paths += [("inventory", recipe.inventory),
              ("tinycore.iso", None if recipe.iso is None else recipe.iso.path)]
    checks += [(key, control_problem(str(path))) for key, path in paths if path is not None]
    if recipe.iso is not None and not ISO_NAME.match(recipe.iso.name):
        checks.append(("tinycore.iso", f"'{recipe.iso.name}' is not an ISO file name"))
    checks += [(key_path("vars", name), var_problem(name, value))
               for name, value in recipe.vars.items()]
    for name, line in recipe.labels.items():
        checks.append((key_path("boot.labels", name),
                       label_problem(name) or kernel_line_problem(line)))
    checks += [(f"image.remove[{i}]", pattern_problem(p)) for i, p in enumerate(recipe.remove)]
    checks += [(f"image.check_ignore[{i}]", pattern_problem(p, climbs=False))
               for i, p in enumerate(recipe.check_ignore)]
    for path, attributes in recipe.files.items():
        key = key_path("files", f"/{path}")
        checks.append((key, image_path_problem(f"/{path}")))
        checks.append((f"{key}.mode", None if attributes.mode is None
                       else mode_problem(attributes.mode)))
        checks += [(f"{key}.{which}", owner_problem(owner)) for which, owner in
                   (("owner", attributes.owner), ("group", attributes.group))
                   if owner is not None]
    yield from ((key, problem) for key, problem in checks if problem)


def _is_mirror(url: str) -> bool:
    try:
        return normalize_mirror(url) == url
    except InputError:
        return False
