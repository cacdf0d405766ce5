"""Reading a recipe: the TOML file walked into a `Recipe`, every problem reported at once."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from ..errors import InputError, RecipeError, boundary
from ..formats.compress import Compression
from ..formats.tomlfile import (
    CONTROL,
    TEMPLATE_TEXT,
    control_characters,
    key_path,
    read_toml,
    type_name,
)
from .recipe import (
    DEFAULT_MIRRORS,
    EXTENSION_NAME,
    ISO_MAJOR,
    ISO_NAME,
    RELEASE,
    CheckPolicy,
    ExtensionMode,
    FileAttributes,
    Flavor,
    IsoInput,
    OutputMode,
    Overlay,
    Recipe,
    archive_suffix,
    extension_filename,
    image_path_problem,
    initrd_name_problem,
    kernel_line_problem,
    label_problem,
    mode_problem,
    normalize_mirror,
    owner_problem,
    pattern_problem,
    release_problem,
    serial_problem,
    timeout_problem,
    var_problem,
)

E = TypeVar("E", bound=StrEnum)


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
            append=self.append(boot),
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
            check_ignore=self.patterns(image, "image.check_ignore", climbs=False),
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
        if value is not None:
            self.refused("tinycore.release", release_problem(value))
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
            self.refused(key_path("vars", name), var_problem(name, item))
        return MappingProxyType(dict(sorted(value.items())))

    def flag(self, table: dict[str, Any], key: str) -> bool:
        value = table.get(key.rsplit(".", 1)[-1], False)
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {type_name(value)}")
            return False
        return value

    def refused(self, key: str, problem: str | None) -> bool:
        """Report `problem` under `key`, if there is one (the model's own checks)."""
        if problem:
            self.problem(key, problem)
        return problem is not None

    def serial(self, boot: dict[str, Any]) -> str | None:
        value = boot.get("serial")
        refused = value is None or self.refused("boot.serial", serial_problem(value))
        return None if refused else str(value)

    def append(self, boot: dict[str, Any]) -> str:
        value = self.string(boot, "boot.append", "base nodhcp") or ""
        self.refused("boot.append", kernel_line_problem(value))
        return value

    def timeout(self, boot: dict[str, Any]) -> int:
        value = boot.get("timeout", 0)
        return 0 if self.refused("boot.timeout", timeout_problem(value)) else int(value)

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
            elif not self.refused(key, kernel_line_problem(line)):
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
        patterns = self.patterns(image, "image.remove")
        if patterns and image.get("output") == OutputMode.APPEND:
            self.problem("image.remove", "append mode cannot remove base entries "
                         "(use output = \"repack\")")
        return patterns

    def patterns(self, image: dict[str, Any], key: str, climbs: bool = True) -> tuple[str, ...]:
        """Paths or globs inside the image (`image.remove` may not climb with `..`)."""
        return tuple(pattern.strip("/") for where, pattern in self.string_list(image, key)
                     if not self.refused(where, pattern_problem(pattern, climbs)))

    def files(self, table: dict[str, Any]) -> Mapping[str, FileAttributes]:
        result = {}
        for path, value in table.items():
            key = key_path("files", path)
            if self.refused(key, image_path_problem(path)):
                continue
            if not isinstance(value, dict):
                self.problem(key, f"expected a table, got {type_name(value)}")
                continue
            self.check_keys(value, f"{key}.", {"mode", "owner", "group", "secret"})
            result[path.strip("/")] = FileAttributes(
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
        return None if self.refused(key, mode_problem(value)) else int(value)

    def owner(self, value: Any, key: str) -> str | int | None:
        if value is None:
            return None
        if self.refused(key, owner_problem(value)):
            return None
        return value if isinstance(value, str) else int(value)

    def initrd_name(self, boot: dict[str, Any], flavor: Flavor) -> str:
        name = self.string(boot, "boot.initrd_name", "core.hts.gz")
        if name is None:
            return "core.hts.gz"
        self.refused("boot.initrd_name", initrd_name_problem(name, flavor, self.path.stem))
        return name
