"""What a fetch is asked for and what it gives: the options, the verified input files of a build,
and the facts read from them (the kernel version a core ships modules for).

`fetch` produces `Inputs`; `build`, the check and the lock file read them.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..config.recipe import Recipe
from ..errors import ArchiveError, boundary
from ..formats.newc import iter_initramfs
from ..progress import Progress, format_size
from .deps import Resolution
from .mirror import Policy

MODULES_DIR = re.compile(r"^lib/modules/([^/]+)(/|$)")


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: where the cache is, whether the network may be used, how to show it."""

    cache_dir: Path | None = None
    offline: bool = False
    refresh: bool = False  # ask the mirror for current checksums and `.dep`s; re-download drift
    progress: Progress | None = None  # called as downloads grow: (bytes done, bytes expected)
    jobs: int = 4
    policy: Policy = field(default_factory=Policy)
    lock: Mapping[str, str] | None = None  # mirror path -> sha256; None: the recipe's lock file
    locked: bool = False  # and no input may be missing from the lock or added to it
    lock_file: bool = True  # read RECIPE.lock when `lock` is None (`tcbuild lock` does not)


@dataclass(frozen=True)
class Input:
    """One input file on disk, verified; `origin` is "cache", "local" or the mirror it came from."""

    name: str
    path: Path
    sha256: str
    size: int
    origin: str

    @property
    def label(self) -> str:
        """How errors name it: a mirror's file by name, a local one with its path too."""
        return f"{self.name} ({self.path})" if self.origin == "local" else self.name


@dataclass(frozen=True)
class Inputs:
    """Everything a build needs: kernel, core parts, kernel version, extensions in load order."""

    recipe: Recipe
    kernel: Input
    core: tuple[Input, ...]
    kernel_version: str
    resolution: Resolution
    extensions: tuple[Input, ...]
    used: Mapping[str, str] = field(default_factory=dict)  # every input file -> sha256
    read_provides: Callable[[], bytes | None] | None = field(default=None, repr=False,
                                                             compare=False)

    @functools.cached_property
    def provides(self) -> bytes | None:
        """The mirror's provides.db, for the check's hints: read when first asked for (an
        unchanged rebuild never asks)."""
        return self.read_provides() if self.read_provides is not None else None

    @property
    def files(self) -> tuple[Input, ...]:
        return (self.kernel, *self.core, *self.extensions)

    def report(self) -> list[str]:
        """One line per file (name, size, origin) and a summary (`tcbuild fetch`)."""
        width = max(len(f.name) for f in self.files)
        lines = [f"  {f.name:<{width}}  {format_size(f.size):>10}  {f.origin}" for f in self.files]
        where = {"cache": "from the cache", "local": "local"}
        origins = sorted(Counter(f.origin for f in self.files).items())
        parts = [f"{count} {where.get(origin, f'from {origin}')}" for origin, count in origins]
        total = format_size(sum(f.size for f in self.files))
        lines.append(f"{len(self.files)} files, {total}, verified: {', '.join(parts)} "
                     f"(kernel {self.kernel_version})")
        return lines

    def as_json(self) -> dict[str, object]:
        """The inputs as JSON-ready data (`tcbuild fetch --json`)."""
        return {"recipe": str(self.recipe.path), "kernel_version": self.kernel_version,
                "order": list(self.resolution.order),
                "files": [{"name": f.name, "path": str(f.path), "sha256": f.sha256,
                           "size": f.size, "origin": f.origin} for f in self.files]}


@boundary
def kernel_version(core: tuple[Path, ...], names: tuple[str, ...] = ()) -> str:
    """The kernel version a core ships modules for (`lib/modules/<version>/`), all segments read.

    `names` label the files in errors (cached files are named by their checksum).
    """
    names = names or tuple(p.name for p in core)
    versions: list[str] = []
    for path, name in zip(core, names, strict=True):
        for entry in iter_initramfs(path, data=False, label=name):
            match = MODULES_DIR.match(entry.path)
            if match and match[1] not in versions:
                versions.append(match[1])
    if len(versions) != 1:
        found = f"several: {', '.join(versions)}" if versions else "none"
        raise ArchiveError(f"{' + '.join(names)}: expected one lib/modules/<version>/ directory, "
                           f"found {found}")
    return versions[0]
