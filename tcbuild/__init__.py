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

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:  # what type checkers see; at run time `__getattr__` loads each on first use
    from .boot.iso import IsoPlan, plan_iso, write_iso
    from .bootserver.apply import Installed
    from .bootserver.files import Dhcp, server_files
    from .check.rules import Finding
    from .check.run import CheckFailed, check_target
    from .config.allocate import NewHost, Request
    from .config.inventory import Inventory
    from .config.inventoryfile import load_inventory
    from .config.lockfile import LockFile, lock_path, read_lock
    from .config.recipe import ExtensionMode, Flavor, IsoInput, OutputMode, Overlay, Recipe
    from .config.recipefile import load_recipe
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
    from .fleet.rollout import Power
    from .formats.compress import Compression
    from .formats.manifest import Listing, Manifest, diff, load_listing, read_manifest
    from .progress import Progress, ProgressBar
    from .sources.cache import default_cache_dir
    from .sources.deps import Resolution
    from .sources.fetch import fetch, resolve
    from .sources.inputs import FetchOptions, Input, Inputs, kernel_version
    from .sources.mirror import Policy
    from .stages.build import BuildOptions, BuildResult, build
    from .stages.enroll import ApplyOptions, Changed, enroll, enroll_many, enroll_new, retire
    from .stages.files import check_server_config, lock, write_server_config
    from .stages.iso import IsoResult, build_iso
    from .stages.publish import publish
    from .stages.rollout import RolloutOptions, RolloutOutcome, rollout
    from .tftproot.releases import Plan, Rollback, rollback
    from .tftproot.state import Release, current, releases, served
    from .tftproot.verify import verify

_MODULES = {  # the same names as above, by module
    "boot.iso": ("IsoPlan", "plan_iso", "write_iso"),
    "bootserver.apply": ("Installed",),
    "bootserver.files": ("Dhcp", "server_files"),
    "check.rules": ("Finding",),
    "check.run": ("CheckFailed", "check_target"),
    "config.allocate": ("NewHost", "Request"),
    "config.inventory": ("Inventory",),
    "config.inventoryfile": ("load_inventory",),
    "config.lockfile": ("LockFile", "lock_path", "read_lock"),
    "config.recipe": ("ExtensionMode", "Flavor", "IsoInput", "OutputMode", "Overlay", "Recipe"),
    "config.recipefile": ("load_recipe",),
    "errors": ("ArchiveError", "ChecksumError", "FetchError", "FileError", "InputError",
               "RecipeError", "StateError", "TcbuildError"),
    "formats.compress": ("Compression",),
    "formats.manifest": ("Listing", "Manifest", "diff", "load_listing", "read_manifest"),
    "progress": ("Progress", "ProgressBar"),
    "sources.cache": ("default_cache_dir",),
    "sources.deps": ("Resolution",),
    "sources.fetch": ("fetch", "resolve"),
    "sources.inputs": ("FetchOptions", "Input", "Inputs", "kernel_version"),
    "sources.mirror": ("Policy",),
    "stages.build": ("BuildOptions", "BuildResult", "build"),
    "stages.enroll": ("ApplyOptions", "Changed", "enroll", "enroll_many", "enroll_new", "retire"),
    "stages.files": ("check_server_config", "lock", "write_server_config"),
    "stages.iso": ("IsoResult", "build_iso"),
    "stages.publish": ("publish",),
    "stages.rollout": ("RolloutOptions", "RolloutOutcome", "rollout"),
    "fleet.rollout": ("Power",),
    "tftproot.releases": ("Plan", "Rollback", "rollback"),
    "tftproot.state": ("Release", "current", "releases", "served"),
    "tftproot.verify": ("verify",),
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


__all__ = [
    "ApplyOptions",
    "ArchiveError",
    "BuildOptions",
    "BuildResult",
    "Changed",
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
    "Installed",
    "Inputs",
    "Inventory",
    "IsoInput",
    "IsoPlan",
    "IsoResult",
    "Listing",
    "LockFile",
    "Manifest",
    "NewHost",
    "OutputMode",
    "Overlay",
    "Plan",
    "Policy",
    "Power",
    "Progress",
    "ProgressBar",
    "Recipe",
    "RecipeError",
    "Release",
    "Request",
    "Resolution",
    "Rollback",
    "RolloutOptions",
    "RolloutOutcome",
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
    "enroll",
    "enroll_many",
    "enroll_new",
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
    "retire",
    "rollback",
    "rollout",
    "served",
    "server_files",
    "verify",
    "write_iso",
    "write_server_config",
]
