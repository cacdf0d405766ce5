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
    control_problem,
    key_path,
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
        """The values that reach a boot config, a kernel line or an output's name obey the
        rules however the recipe was made (`load_recipe` reports all of a file's problems)."""
        problems = [f"{self.path}: {key}: {message}" for key, message in _boot_problems(self)]
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


def _boot_problems(recipe: Recipe) -> Iterator[tuple[str, str]]:
    """(key, problem) for what reaches a boot config, a kernel line or an output's name."""
    lines = [("boot.append", recipe.append), ("boot.serial", recipe.serial or "")]
    lines += [(key_path("boot.labels", name), line) for name, line in recipe.labels.items()]
    for key, text in lines:
        problem = control_problem(text)
        if problem:
            yield key, problem
    for name in recipe.labels:
        problem = label_problem(name)
        if problem:
            yield key_path("boot.labels", name), problem
    problem = initrd_name_problem(recipe.initrd_name, recipe.flavor, recipe.name)
    if problem:
        yield "boot.initrd_name", problem
