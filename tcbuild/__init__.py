"""tcbuild: build and publish network-boot images for diskless Tiny Core Linux fleets.

The library API; the `tcbuild` command is a thin layer over it.

    recipe = tcbuild.load_recipe("recipes/gameserver.toml")
    result = tcbuild.build(recipe, tcbuild.BuildOptions())
    plan = tcbuild.publish(recipe, Path("/tftpboot"))  # a Plan; warnings go to logging
    problems = tcbuild.verify(Path("/tftpboot"))
    iso = tcbuild.build_iso(recipe)  # build/<name>/<name>.iso, boots as a CD or USB stick

Each name loads its module on first use, so `import tcbuild` costs next to nothing and a caller
(the `tcbuild` command too) loads only what it uses; heavy dependencies (pycdlib, Jinja2,
PySquashfsImage, libdeflate) are imported only where they are used.

Every public function honours the recipe's lock file (`RECIPE.lock`) as the commands do, draws no
progress bar unless given a callback (`FetchOptions(progress=tcbuild.ProgressBar())`), logs its
warnings to the `tcbuild` logger, and raises nothing but `TcbuildError`s for what it expects
(an OSError becomes a `FileError` naming its path).
"""

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:  # what type checkers see; at run time `__getattr__` loads each on first use
    from .build import BuildOptions, BuildResult, build
    from .cache import default_cache_dir
    from .check import Finding
    from .checkrun import CheckFailed, check_target
    from .compress import Compression
    from .deps import Resolution
    from .errors import (
        ArchiveError,
        ChecksumError,
        FetchError,
        FileError,
        InputError,
        RecipeError,
        StateError,
        TcbuildError,
    )
    from .fetch import fetch, resolve
    from .inputs import FetchOptions, Input, Inputs, kernel_version
    from .inventory import Inventory, load_inventory
    from .iso import IsoPlan, plan_iso, write_iso
    from .lockfile import LockFile, lock_path, read_lock
    from .manifest import Listing, Manifest, diff, load_listing, read_manifest
    from .mirror import Policy
    from .pipeline import (
        IsoResult,
        build_iso,
        check_server_config,
        lock,
        publish,
        write_server_config,
    )
    from .progress import Progress, ProgressBar
    from .recipe import ExtensionMode, Flavor, IsoInput, OutputMode, Overlay, Recipe, load_recipe
    from .server import Dhcp, server_files
    from .tftp import Plan, Rollback, rollback
    from .tftpstate import Release, current, releases, served
    from .verify import verify

_MODULES = {  # the same names as above, by module
    "build": ("BuildOptions", "BuildResult", "build"),
    "cache": ("default_cache_dir",),
    "check": ("Finding",),
    "checkrun": ("CheckFailed", "check_target"),
    "compress": ("Compression",),
    "deps": ("Resolution",),
    "errors": ("ArchiveError", "ChecksumError", "FetchError", "FileError", "InputError",
               "RecipeError", "StateError", "TcbuildError"),
    "fetch": ("fetch", "resolve"),
    "inputs": ("FetchOptions", "Input", "Inputs", "kernel_version"),
    "inventory": ("Inventory", "load_inventory"),
    "iso": ("IsoPlan", "plan_iso", "write_iso"),
    "lockfile": ("LockFile", "lock_path", "read_lock"),
    "manifest": ("Listing", "Manifest", "diff", "load_listing", "read_manifest"),
    "mirror": ("Policy",),
    "pipeline": ("IsoResult", "build_iso", "check_server_config", "lock", "publish",
                 "write_server_config"),
    "progress": ("Progress", "ProgressBar"),
    "recipe": ("ExtensionMode", "Flavor", "IsoInput", "OutputMode", "Overlay", "Recipe",
               "load_recipe"),
    "server": ("Dhcp", "server_files"),
    "tftp": ("Plan", "Rollback", "rollback"),
    "tftpstate": ("Release", "current", "releases", "served"),
    "verify": ("verify",),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """A name of the API, its module imported on first use."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


class _Package(ModuleType):
    """The package keeps its API's names when a submodule of the same name is first imported
    (which would set `tcbuild.build`, the function, to `tcbuild.build`, the module)."""

    def __setattr__(self, name: str, value: object) -> None:
        if not (name in _HOME and isinstance(value, ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "ArchiveError",
    "BuildOptions",
    "BuildResult",
    "CheckFailed",
    "ChecksumError",
    "Compression",
    "Dhcp",
    "ExtensionMode",
    "FetchError",
    "FetchOptions",
    "FileError",
    "Finding",
    "Flavor",
    "Input",
    "InputError",
    "Inputs",
    "Inventory",
    "IsoInput",
    "IsoPlan",
    "IsoResult",
    "Listing",
    "LockFile",
    "Manifest",
    "OutputMode",
    "Overlay",
    "Plan",
    "Policy",
    "Progress",
    "ProgressBar",
    "Recipe",
    "RecipeError",
    "Release",
    "Resolution",
    "Rollback",
    "StateError",
    "TcbuildError",
    "__version__",
    "build",
    "build_iso",
    "check_server_config",
    "check_target",
    "current",
    "default_cache_dir",
    "diff",
    "fetch",
    "kernel_version",
    "load_inventory",
    "load_listing",
    "load_recipe",
    "lock",
    "lock_path",
    "plan_iso",
    "publish",
    "read_lock",
    "read_manifest",
    "releases",
    "resolve",
    "rollback",
    "served",
    "server_files",
    "verify",
    "write_iso",
    "write_server_config",
]
