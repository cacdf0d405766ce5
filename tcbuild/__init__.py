"""tcbuild: build and publish network-boot images for diskless Tiny Core Linux fleets.

The library API; the `tcbuild` command is a thin layer over it.

    recipe = tcbuild.load_recipe("recipes/gameserver.toml")
    result = tcbuild.build(recipe, tcbuild.BuildOptions())
    plan, warnings = tcbuild.publish(recipe, Path("/tftpboot"))
    iso = tcbuild.build_iso(recipe)  # build/<name>/<name>.iso, boots as a CD or USB stick
"""

__version__ = "0.1.0"

from .build import BuildOptions, BuildResult, build
from .cache import default_cache_dir
from .deps import Resolution
from .errors import ArchiveError, ChecksumError, FetchError, InputError, RecipeError, TcbuildError
from .fetch import FetchOptions, Input, Inputs, fetch, kernel_version, resolve
from .inventory import Inventory, load_inventory
from .iso import IsoPlan, IsoResult, build_iso, plan_iso, write_iso
from .mirror import Policy
from .recipe import ExtensionMode, Flavor, IsoInput, Overlay, Recipe, load_recipe
from .server import server_files
from .tftp import publish, verify

__all__ = [
    "ArchiveError",
    "BuildOptions",
    "BuildResult",
    "ChecksumError",
    "ExtensionMode",
    "FetchError",
    "FetchOptions",
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
    "build",
    "build_iso",
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
