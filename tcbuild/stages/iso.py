"""Building a recipe's ISO: build (a no-op when up to date), then write the ISO from its outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config.lockfile import lock_path
from ..config.recipe import Recipe
from ..errors import InputError, boundary
from ..formats.manifest import MANIFEST, file_sha256, read_manifest
from .build import BuildOptions, BuildResult, build, default_out_dir, source_date_epoch


@dataclass(frozen=True)
class IsoResult:
    """A written ISO and the build it holds."""

    path: Path
    size: int
    sha256: str
    volume_id: str
    build: BuildResult
    seconds: float  # planning and writing the ISO (the build not included)

    def as_json(self) -> dict[str, object]:
        """The result as JSON-ready data (`tcbuild iso --json`)."""
        built = self.build
        return {"iso": str(self.path), "size": self.size, "sha256": self.sha256,
                "volume_id": self.volume_id, "seconds": round(self.seconds, 3),
                "build": {"out_dir": str(built.out_dir), "build_id": built.build_id,
                          "up_to_date": built.up_to_date, "seconds": round(built.seconds, 3)}}


@boundary
def build_iso(recipe: Recipe, output: Path | None = None, options: BuildOptions | None = None,
              isolinux_dir: Path | None = None) -> IsoResult:
    """Build the recipe (a no-op when up to date), then write its ISO.

    The default `output` is `<build directory>/<recipe name>.iso`. The image's time is
    SOURCE_DATE_EPOCH when set, else the newest entry of the image (as the build's own).
    """
    from ..boot import iso

    if output is not None:
        _check_iso_output(recipe, output, options)
    isolinux = iso.find_isolinux(isolinux_dir)  # before a build that would be for nothing
    efi = iso.find_efi_loader(isolinux_dir)
    result = build(recipe, options)
    started = time.monotonic()
    target = output or result.out_dir / f"{recipe.name}.iso"
    plan = iso.plan_iso(recipe, result.kernel, result.initrd,
                        epoch=image_epoch(result.out_dir), isolinux=isolinux, efi=efi)
    iso.write_iso(plan, target)
    return IsoResult(target, target.stat().st_size, file_sha256(target), plan.volume_id,
                     result, time.monotonic() - started)


def _check_iso_output(recipe: Recipe, output: Path, options: BuildOptions | None) -> None:
    """The ISO may not be written over the build's outputs, the recipe or its lock file."""
    out = (options.out_dir if options else None) or default_out_dir(recipe)
    taken = {out / recipe.flavor.kernel: "the build's kernel",
             out / recipe.initrd_name: "the build's initrd", out / MANIFEST: "the build's manifest",
             recipe.path: "the recipe", lock_path(recipe): "the recipe's lock file"}
    clash = next((what for path, what in taken.items() if path.resolve() == output.resolve()),
                 None)
    if clash:
        raise InputError(f"{output}: the ISO would overwrite {clash}")


def image_epoch(out_dir: Path) -> int:
    """SOURCE_DATE_EPOCH, else the newest mtime among the build's entries (0 when unknown)."""
    epoch = source_date_epoch()
    if epoch is not None:
        return epoch
    manifest = read_manifest(out_dir)
    entries = manifest.entries if manifest is not None else ()
    return max((int(e["mtime"]) for e in entries), default=0)
