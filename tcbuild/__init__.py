"""tcbuild: build and publish network-boot images for diskless Tiny Core Linux fleets.

The library API; the `tcbuild` command is a thin layer over it.

    recipe = tcbuild.load_recipe("recipes/gameserver.toml")
    result = tcbuild.build(recipe, tcbuild.BuildOptions())
    plan = tcbuild.publish(recipe, Path("/tftpboot"))
    iso = tcbuild.build_iso(recipe)  # build/<name>/<name>.iso, boots as a CD or USB stick

Heavy dependencies (pycdlib, Jinja2, PySquashfsImage, libdeflate) are imported where they are
used, so `import tcbuild` stays light: the ISO writer's names load on first use.
"""

from typing import TYPE_CHECKING, Any

from .build import BuildOptions, BuildResult, build
from .cache import default_cache_dir
from .check import Finding
from .checkrun import CheckFailed, check_target
from .deps import Resolution
from .errors import ArchiveError, ChecksumError, FetchError, InputError, RecipeError, TcbuildError
from .fetch import FetchOptions, Input, Inputs, fetch, kernel_version, resolve
from .inventory import Inventory, load_inventory
from .mirror import Policy
from .pipeline import IsoResult, build_iso, publish
from .recipe import ExtensionMode, Flavor, IsoInput, Overlay, Recipe, load_recipe
from .server import server_files
from .tftp import verify
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
    "ExtensionMode",
    "FetchError",
    "FetchOptions",
    "Finding",
    "Flavor",
    "Input",
    "InputError",
    "Inputs",
    "Inventory",
    "IsoInput",
    "IsoPlan",
    "IsoResult",
    "Overlay",
    "Policy",
    "Recipe",
    "RecipeError",
    "Resolution",
    "TcbuildError",
    "__version__",
    "build",
    "build_iso",
    "check_target",
    "default_cache_dir",
    "fetch",
    "kernel_version",
    "load_inventory",
    "load_recipe",
    "plan_iso",
    "publish",
    "resolve",
    "server_files",
    "verify",
    "write_iso",
]
