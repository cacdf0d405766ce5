"""tcbuild: build and publish network-boot images for diskless Tiny Core Linux fleets.

The library API; the `tcbuild` command is a thin layer over it.

    recipe = tcbuild.load_recipe("recipes/gameserver.toml")
    inputs = tcbuild.fetch(recipe, tcbuild.FetchOptions(offline=True))
"""

from .cache import default_cache_dir
from .deps import Resolution
from .errors import ArchiveError, ChecksumError, FetchError, InputError, RecipeError, TcbuildError
from .fetch import FetchOptions, Input, Inputs, fetch, kernel_version, resolve
from .mirror import Policy
from .recipe import ExtensionMode, Flavor, Overlay, Recipe, load_recipe

__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "ChecksumError",
    "ExtensionMode",
    "FetchError",
    "FetchOptions",
    "Flavor",
    "Input",
    "InputError",
    "Inputs",
    "Overlay",
    "Policy",
    "Recipe",
    "RecipeError",
    "Resolution",
    "TcbuildError",
    "default_cache_dir",
    "fetch",
    "kernel_version",
    "load_recipe",
    "resolve",
]
