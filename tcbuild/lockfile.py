"""Lock files: the sha256 of every input a recipe used, so later builds take exactly those.

md5 over plain HTTP guards against accidents, not against an attacker; a lock file kept in
version control next to the recipe does, and makes a build reproducible months later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .recipe import Recipe
from .version import __version__


def lock_path(recipe: Recipe) -> Path:
    """`recipes/gameserver.toml` -> `recipes/gameserver.lock`."""
    return recipe.path.with_suffix(".lock")


def read_lock(recipe: Recipe) -> dict[str, str] | None:
    """The recipe's lock (mirror path -> sha256), or None when it has none."""
    path = lock_path(recipe)
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable lock file ({e})") from e
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise InputError(f"{path}: not a tcbuild lock file (no \"files\" table of checksums)")
    return files


def lock_text(recipe: Recipe, used: Mapping[str, str]) -> str:
    """The lock file for what a fetch used (`Inputs.used`; `absent` for a `.dep` the mirror does
    not have)."""
    data = {
        "tcbuild": __version__,
        "recipe": recipe.name,
        "release": recipe.release,
        "flavor": str(recipe.flavor),
        "files": dict(sorted(used.items())),
    }
    return json.dumps(data, indent=1) + "\n"
