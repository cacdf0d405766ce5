"""The files commands write beside the image: the recipe's lock file and the boot server's
configuration (written whole, or compared with what is installed)."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from ..atomic import publish_files
from ..bootserver.files import Dhcp, server_files
from ..config.inventory import Inventory
from ..config.lockfile import lock_path, lock_text
from ..config.recipe import Recipe
from ..errors import FileError, boundary
from ..sources.fetch import fetch
from ..sources.inputs import FetchOptions, Inputs


@boundary
def lock(recipe: Recipe, options: FetchOptions | None = None) -> tuple[Path, Inputs]:
    """Fetch the recipe's inputs afresh (ignoring its lock file) and write `RECIPE.lock`."""
    inputs = fetch(recipe, replace(options or FetchOptions(), lock=None, locked=False,
                                   lock_file=False))
    path = lock_path(recipe)
    publish_files(path.parent, {path.name: lock_text(recipe, inputs.used).encode()})
    return path, inputs


@boundary
def write_server_config(inventory: Inventory, out: Path,
                        dhcp: Collection[Dhcp] = tuple(Dhcp)) -> list[Path]:
    """Write the boot server's files (`server.server_files`) into `out`, each whole; their paths."""
    files = server_files(inventory, dhcp)
    publish_files(out, {name: text.encode() for name, text in files.items()})
    return [out / name for name in files]


@boundary
def check_server_config(inventory: Inventory, out: Path, dhcp: Collection[Dhcp] = tuple(Dhcp)
                        ) -> dict[str, list[str]]:
    """Compare the boot server's files with those in `out`, writing nothing: file name -> a
    unified diff from the installed file (or /dev/null) to the generated one, empty if equal."""
    diffs = {}
    for name, text in server_files(inventory, dhcp).items():
        target = out / name
        try:
            installed: str | None = target.read_bytes().decode()
        except FileNotFoundError:
            installed = None
        except UnicodeDecodeError as e:
            raise FileError(f"{target}: not UTF-8 text (byte {e.start}), so not a file "
                            "tcbuild wrote; nothing to compare with", str(target)) from e
        old = [] if installed is None else installed.splitlines(keepends=True)
        diffs[name] = [] if installed == text else list(difflib.unified_diff(
            old, text.splitlines(keepends=True),
            str(target) if installed is not None else "/dev/null", f"{target} (generated)"))
    return diffs
