"""Lock files: the sha256 of every input a recipe used, so later builds take exactly those.

md5 over plain HTTP guards against accidents, not against an attacker; a lock file kept in
version control next to the recipe does, and makes a build reproducible months later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, boundary
from ..formats.statefile import SHA256, Fields
from ..version import __version__
from .recipe import Recipe

ABSENT = "absent"  # a `.dep` file the mirror does not have


def lock_path(recipe: Recipe) -> Path:
    """`recipes/gameserver.toml` -> `recipes/gameserver.lock`."""
    return recipe.path.with_suffix(".lock")


@dataclass(frozen=True)
class LockFile:
    """A recipe's lock file, checked: each input (mirror path) and its sha256 (or `absent`)."""

    path: Path
    files: Mapping[str, str]
    recipe: str = ""
    release: str = ""
    flavor: str = ""

    @classmethod
    def read(cls, path: Path) -> LockFile:
        """The lock file at `path`; FileNotFoundError when there is none."""
        f = Fields.read(path, InputError)
        files = f.strings("files")
        for key, value in files.items():
            if value != ABSENT and not SHA256.fullmatch(value):
                f.obj("files").fail(key, "not a sha256 (64 lowercase hex digits) or \"absent\"")
            if not key or key.startswith("/") or ".." in key.split("/"):
                f.obj("files").fail(key, "not a mirror path")
        return cls(path, files, f.string("recipe", ""), f.string("release", ""),
                   f.string("flavor", ""))


@boundary
def read_lock(recipe: Recipe) -> dict[str, str] | None:
    """The recipe's lock (mirror path -> sha256), or None when it has none."""
    try:
        return dict(LockFile.read(lock_path(recipe)).files)
    except FileNotFoundError:
        return None


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
