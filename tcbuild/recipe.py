"""Recipes: a TOML file read into a frozen, validated `Recipe`, every problem reported at once."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from .compress import Compression
from .errors import InputError, RecipeError, boundary
from .manifest import MANIFEST
from .tomlfile import (
    CONTROL,
    TEMPLATE_TEXT,
    control_characters,
    control_problem,
    key_path,
    read_toml,
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
E = TypeVar("E", bound=StrEnum)


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


@boundary
def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe; raise `RecipeError` listing every problem found."""
    path = Path(path)
    return _RecipeReader(path).read(read_toml(path, "recipe"))


class _RecipeReader:
    """Walks the parsed TOML, collecting problems instead of stopping at the first."""

    SECTIONS = {
        "tinycore": {"release", "flavor", "mirrors", "iso"},
        "extensions": {"install", "local", "mode"},
        "overlay": {"source"},
        "vars": None,
        "boot": {"append", "initrd_name", "serial", "timeout", "prompt", "labels"},
        "image": {"output", "compression", "remove", "allow_secrets", "check", "check_ignore"},
        "files": None,
        "inventory": None,
    }

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.problems: list[str] = []
        self.tainted: set[str] = set()  # keys whose control characters are reported already

    def problem(self, key: str, message: str) -> None:
        if key not in self.tainted and not CONTROL.search(key):
            self.problems.append(f"{self.path}: {key}: {message}")

    def read(self, data: dict[str, Any]) -> Recipe:
        for key, message in control_characters(data, allowed={"vars": TEMPLATE_TEXT}):
            self.problems.append(f"{self.path}: {key}: {message}")
            self.tainted.add(key)
        self.check_keys(data, "", set(self.SECTIONS))
        core = self.table(data, "tinycore", required=True)
        ext = self.table(data, "extensions")
        boot = self.table(data, "boot")
        image = self.table(data, "image")
        release = self.release(core)  # problems in the order of the file's keys
        flavor = self.choice(core, "tinycore.flavor", Flavor, Flavor.COREPURE64)
        install = self.install(ext)
        fields: dict[str, Any] = dict(
            path=self.path,
            release=release,
            flavor=flavor,
            mirrors=self.mirrors(core),
            install=install,
            local=self.local(ext, install),
            mode=self.choice(ext, "extensions.mode", ExtensionMode, ExtensionMode.UNPACKED),
            overlays=self.overlays(data.get("overlay", [])),
            vars=self.vars(data.get("vars", {})),
            append=self.string(boot, "boot.append", "base nodhcp") or "",
            initrd_name=self.initrd_name(boot, flavor),
            output=self.choice(image, "image.output", OutputMode, OutputMode.REPACK),
            compression=self.choice(image, "image.compression", Compression, Compression.SMALL),
            remove=self.remove(image),
            files=self.files(self.table(data, "files")),
            inventory=self.inventory(data.get("inventory")),
            allow_secrets=self.flag(image, "image.allow_secrets"),
            serial=self.serial(boot),
            timeout=self.timeout(boot),
            iso=self.iso(core),
            prompt=self.flag(boot, "boot.prompt"),
            labels=self.labels(boot),
            check=self.choice(image, "image.check", CheckPolicy, CheckPolicy.WARN),
            check_ignore=self.check_ignore(image),
        )
        if self.problems:
            raise RecipeError(self.problems)
        return Recipe(**fields)

    # -- generic checks ------------------------------------------------------------------------

    def check_keys(self, table: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                expected = ", ".join(sorted(allowed))
                self.problem(key_path(where.rstrip("."), key),
                             f"unknown key{hint}; expected one of: {expected}")

    def table(self, data: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            if required:
                self.problem(key, "missing table")
            return {}
        if not isinstance(value, dict):
            self.problem(key, f"expected a table, got {type_name(value)}")
            return {}
        allowed = self.SECTIONS[key]
        if allowed is not None:
            self.check_keys(value, f"{key}.", allowed)
        return value

    def string(self, table: dict[str, Any], key: str, default: str | None) -> str | None:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if value is None:
            self.problem(key, "missing")
        elif not isinstance(value, str):
            self.problem(key, f"expected a string, got {type_name(value)}")
            return None
        return value

    def string_list(self, table: dict[str, Any], key: str) -> list[tuple[str, str]]:
        """(key path, value) pairs of a list of strings; a missing key is an empty list."""
        value = table.get(key.rsplit(".", 1)[-1], [])
        if not isinstance(value, list):
            self.problem(key, f"expected an array of strings, got {type_name(value)}")
            return []
        items = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                items.append((f"{key}[{i}]", item))
            else:
                self.problem(f"{key}[{i}]", f"expected a string, got {type_name(item)}")
        return items

    def choice(self, table: dict[str, Any], key: str, enum: type[E], default: E) -> E:
        value = self.string(table, key, default.value)
        if value is None:
            return default
        try:
            return enum(value)
        except ValueError:
            options = " | ".join(e.value for e in enum)
            self.problem(key, f"'{value}' is not one of: {options}")
            return default

    def existing(self, key: str, relative: str, kind: str) -> Path:
        """A path from the recipe, relative to the recipe file, that must exist."""
        path = Path(os.path.normpath(self.base / relative))
        exists = path.is_dir() if kind == "directory" else path.is_file()
        if not exists:
            what = "does not exist" if not path.exists() else f"is not a {kind}"
            self.problem(key, f"{kind} '{relative}' {what} (looked for {path})")
        return path

    # -- sections ------------------------------------------------------------------------------

    def release(self, core: dict[str, Any]) -> str:
        if not core:
            return "0.x"  # the missing table is reported already
        value = self.string(core, "tinycore.release", None)
        if value is not None and not RELEASE.match(value):
            self.problem("tinycore.release", f"'{value}' is not a release series like '15.x'")
        return value or "0.x"

    def mirrors(self, core: dict[str, Any]) -> tuple[str, ...]:
        if "mirrors" not in core:
            return DEFAULT_MIRRORS
        items = self.string_list(core, "tinycore.mirrors")
        mirrors = []
        for key, url in items:
            try:
                mirrors.append(normalize_mirror(url))
            except InputError:
                self.problem(key, f"'{url}' is not an http:// or https:// URL")
        if not items and isinstance(core["mirrors"], list):
            self.problem("tinycore.mirrors", "at least one mirror is needed")
        return tuple(mirrors)

    def iso(self, core: dict[str, Any]) -> IsoInput | None:
        """A bare file name is on the mirror; a path (with a `/`) is relative to the recipe."""
        value = core.get("iso")
        if value is None:
            return None
        if not isinstance(value, str) or not value.lower().endswith(".iso"):
            shown = repr(value) if isinstance(value, str) else type_name(value)
            self.problem("tinycore.iso", f"expected an ISO file name like "
                         f"\"CorePure64-15.0.iso\" or a path like \"./my.iso\", got {shown}")
            return None
        if "/" in value:
            return IsoInput(Path(value).name, self.existing("tinycore.iso", value, "file"))
        if not ISO_NAME.match(value):
            self.problem("tinycore.iso", f"'{value}' is not a file name on the mirror (a local "
                         "file needs a path like \"./my.iso\")")
            return None
        major, release = ISO_MAJOR.search(value), RELEASE.match(str(core.get("release", "")))
        if major and release and major[1] != release[1]:
            self.problem("tinycore.iso", f"'{value}' is not a {release[0]} release (tinycore."
                         f"release)")
        return IsoInput(value)

    def install(self, ext: dict[str, Any]) -> tuple[str, ...]:
        names: dict[str, str] = {}
        for key, name in self.string_list(ext, "extensions.install"):
            if not EXTENSION_NAME.match(name):
                self.problem(key, f"'{name}' is not an extension name")
                continue
            filename = extension_filename(name)
            if filename in names:
                self.problem(key, f"'{name}' is listed twice (also at {names[filename]})")
            names.setdefault(filename, key)
        return tuple(names)

    def local(self, ext: dict[str, Any], install: tuple[str, ...]) -> tuple[Path, ...]:
        paths = []
        for key, relative in self.string_list(ext, "extensions.local"):
            kind = "file" if relative.endswith(".tcz") else "directory"
            paths.append(self.existing(key, relative, kind))
        for name in sorted({extension_filename(p.name) for p in paths} & set(install)):
            self.problem("extensions.local", f"'{name}' is also in extensions.install")
        return tuple(paths)

    def overlays(self, value: Any) -> tuple[Overlay, ...]:
        if not isinstance(value, list):
            self.problem("overlay", f"expected an array of tables ([[overlay]]), got "
                         f"{type_name(value)}")
            return ()
        overlays = []
        for i, entry in enumerate(value):
            key = f"overlay[{i}]"
            if not isinstance(entry, dict):
                self.problem(key, f"expected a table, got {type_name(entry)}")
                continue
            self.check_keys(entry, f"{key}.", self.SECTIONS["overlay"] or set())
            source = self.string(entry, f"{key}.source", None)
            if source is not None:
                kind = "file" if archive_suffix(Path(source)) else "directory"
                overlays.append(Overlay(self.existing(f"{key}.source", source, kind)))
        return tuple(overlays)

    def vars(self, value: Any) -> Mapping[str, str | int | float | bool]:
        if not isinstance(value, dict):
            self.problem("vars", f"expected a table, got {type_name(value)}")
            return MappingProxyType({})
        for name, item in value.items():
            if not VAR_NAME.match(name):
                self.problem(key_path("vars", name), "not a valid variable name (letters, "
                             "digits, _)")
            elif not isinstance(item, str | int | float | bool):
                self.problem(f"vars.{name}", f"expected a string, number or boolean, got "
                             f"{type_name(item)}")
        return MappingProxyType(dict(sorted(value.items())))

    def flag(self, table: dict[str, Any], key: str) -> bool:
        value = table.get(key.rsplit(".", 1)[-1], False)
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {type_name(value)}")
            return False
        return value

    def serial(self, boot: dict[str, Any]) -> str | None:
        value = boot.get("serial")
        if value is None:
            return None
        if not isinstance(value, str) or not re.fullmatch(r"[0-3]( \d{3,6})?", value):
            self.problem("boot.serial", f"{value!r} is not a pxelinux SERIAL line like "
                         "\"0 115200\"")
            return None
        return value

    def timeout(self, boot: dict[str, Any]) -> int:
        value = boot.get("timeout", 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 36000:
            self.problem("boot.timeout", f"{value!r} is not a time in tenths of a second")
            return 0
        return value

    def labels(self, boot: dict[str, Any]) -> Mapping[str, str]:
        value = boot.get("labels", {})
        if not isinstance(value, dict):
            self.problem("boot.labels", f"expected a table of label = \"kernel line\", got "
                         f"{type_name(value)}")
            return MappingProxyType({})
        labels = {}
        for name, line in value.items():
            key = key_path("boot.labels", name)
            problem = label_problem(name)
            if problem:
                self.problem(key, problem)
            elif not isinstance(line, str):
                self.problem(key, f"expected a kernel line (a string), got {type_name(line)}")
            else:
                labels[name] = line
        return MappingProxyType(dict(sorted(labels.items())))

    def inventory(self, value: Any) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem("inventory", f"expected a path to an inventory file, got "
                         f"{type_name(value)}")
            return None
        return self.existing("inventory", value, "file")

    def remove(self, image: dict[str, Any]) -> tuple[str, ...]:
        patterns = []
        for key, pattern in self.string_list(image, "image.remove"):
            normalized = pattern.strip("/")
            if not normalized or ".." in normalized.split("/"):
                self.problem(key, f"'{pattern}' is not a path or glob inside the image")
            else:
                patterns.append(normalized)
        if patterns and image.get("output") == OutputMode.APPEND:
            self.problem("image.remove", "append mode cannot remove base entries "
                         "(use output = \"repack\")")
        return tuple(patterns)

    def check_ignore(self, image: dict[str, Any]) -> tuple[str, ...]:
        patterns = []
        for key, pattern in self.string_list(image, "image.check_ignore"):
            normalized = pattern.strip("/")
            if not normalized:
                self.problem(key, f"'{pattern}' is not a path or glob inside the image")
            else:
                patterns.append(normalized)
        return tuple(patterns)

    def files(self, table: dict[str, Any]) -> Mapping[str, FileAttributes]:
        result = {}
        for path, value in table.items():
            key = key_path("files", path)
            normalized = path.strip("/")
            if not path.startswith("/") or not normalized or ".." in normalized.split("/"):
                self.problem(key, "expected an absolute path inside the image, like "
                             "\"/opt/bootlocal.sh\"")
                continue
            if not isinstance(value, dict):
                self.problem(key, f"expected a table, got {type_name(value)}")
                continue
            self.check_keys(value, f"{key}.", {"mode", "owner", "group", "secret"})
            result[normalized] = FileAttributes(
                mode=self.mode(value.get("mode"), f"{key}.mode"),
                owner=self.owner(value.get("owner"), f"{key}.owner"),
                group=self.owner(value.get("group"), f"{key}.group"),
                secret=self.flag(value, f"{key}.secret"),
            )
        return MappingProxyType(dict(sorted(result.items())))

    def mode(self, value: Any, key: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3,4}", value):
            return int(value, 8)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o7777:
            return value
        self.problem(key, f"{value!r} is not a mode like \"0755\" or 0o755")
        return None

    def owner(self, value: Any, key: str) -> str | int | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
            return value
        if isinstance(value, str) and re.fullmatch(r"[a-z_][a-z0-9_-]*\$?", value):
            return value
        self.problem(key, f"{value!r} is not a user or group name or number")
        return None

    def initrd_name(self, boot: dict[str, Any], flavor: Flavor) -> str:
        name = self.string(boot, "boot.initrd_name", "core.hts.gz")
        if name is None:
            return "core.hts.gz"
        problem = initrd_name_problem(name, flavor, self.path.stem)
        if problem:
            self.problem("boot.initrd_name", problem)
        return name
