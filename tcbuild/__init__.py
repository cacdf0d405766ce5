"""tcbuild: build and publish network-boot images for diskless Tiny Core Linux fleets.

The library API; the `tcbuild` command is a thin layer over it.

    recipe = tcbuild.load_recipe("recipes/gameserver.toml")
    result = tcbuild.build(recipe, tcbuild.BuildOptions())
    plan = tcbuild.publish(recipe, Path("/tftpboot"))  # a Plan; warnings go to logging
    problems = tcbuild.verify(Path("/tftpboot"))
    iso = tcbuild.build_iso(recipe)  # build/<name>/<name>.iso, boots as a CD or USB stick

Heavy dependencies (pycdlib, Jinja2, PySquashfsImage, libdeflate) are imported where they are
used, so `import tcbuild` stays light: the ISO writer's names load on first use.

Every public function honours the recipe's lock file (`RECIPE.lock`) as the commands do, draws no
progress bar unless given a callback (`FetchOptions(progress=tcbuild.ProgressBar())`), logs its
warnings to the `tcbuild` logger, and raises nothing but `TcbuildError`s for what it expects
(an OSError becomes a `FileError` naming its path).
"""

from typing import TYPE_CHECKING, Any

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
from .version import __version__

if TYPE_CHECKING:
    from .iso import IsoPlan, plan_iso, write_iso

_LAZY = {"IsoPlan": "iso", "plan_iso": "iso", "write_iso": "iso"}


def __getattr__(name: str) -> Any:
    """The names whose modules import a heavy dependency, imported on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
