"""Official Tiny Core ISOs read as input: the kernel and core out of their `/boot`, for `fetch`.

Apart from writing ISOs (`iso`): reading one needs nothing of the build.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, cast

import pycdlib
from pycdlib.dr import DirectoryRecord
from pycdlib.pycdlibexception import PyCdlibException

from ..errors import ArchiveError

BOOT = "boot"
"""Where an official Tiny Core ISO keeps its kernel and initrd."""


class OfficialIso(contextlib.AbstractContextManager["OfficialIso"]):
    """An ISO opened to read files from its `/boot` (by Rock Ridge name, else ISO 9660 name).

    Errors are `ArchiveError`s naming `label` (the ISO's name, not its cache path).
    """

    def __init__(self, path: Path, label: str) -> None:
        self.label = label
        self._file = path.open("rb")
        self._iso = pycdlib.PyCdlib()
        try:
            self._boot = self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path) -> dict[str, tuple[str, int]]:
        try:
            self._iso.open_fp(self._file)
        except (PyCdlibException, OSError, ValueError, IndexError) as e:
            raise ArchiveError(f"{self.label}: not an ISO 9660 image ({_reason(e)})") from e
        whole = self._iso.pvd.space_size * self._iso.pvd.logical_block_size()
        size = path.stat().st_size
        if size < whole:  # pycdlib would quietly shorten the files past the end
            raise ArchiveError(f"{self.label}: truncated: {size} of its {whole} bytes")
        return self._listing()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(PyCdlibException):
            self._iso.close()
        self._file.close()

    def _name(self, record: DirectoryRecord) -> str:
        if record.rock_ridge is not None:
            rr: bytes = record.rock_ridge.name()
            if rr:
                return rr.decode("utf-8", "replace")
        ident: bytes = record.file_identifier()
        return ident.decode("ascii", "replace").split(";")[0].rstrip(".").lower()

    def _children(self, iso_path: str) -> Iterator[tuple[str, DirectoryRecord]]:
        try:
            for record in self._iso.list_children(iso_path=iso_path):
                if not (record.is_dot() or record.is_dotdot()):
                    yield self._name(record), record
        except PyCdlibException as e:
            raise ArchiveError(f"{self.label}: unreadable directory {iso_path} "
                               f"({_reason(e)})") from e

    def _listing(self) -> dict[str, tuple[str, int]]:
        """File name in /boot -> its ISO 9660 path and size."""
        boot = next((rec for name, rec in self._children("/") if name == BOOT and rec.is_dir()),
                    None)
        if boot is None:
            raise ArchiveError(f"{self.label}: no /{BOOT} directory (not a Tiny Core ISO)")
        where = "/" + boot.file_identifier().decode("ascii", "replace")
        return {name: (f"{where}/{rec.file_identifier().decode('ascii', 'replace')}",
                       rec.get_data_length())
                for name, rec in self._children(where) if rec.is_file()}

    @property
    def boot_files(self) -> tuple[str, ...]:
        return tuple(sorted(self._boot))

    def extract(self, name: str, out: IO[bytes]) -> None:
        """Copy `/boot/<name>` into `out` (a seekable file), all of it or an error."""
        if name not in self._boot:
            have = ", ".join(self.boot_files) or "nothing"
            raise ArchiveError(f"{self.label}: no /{BOOT}/{name} (its /{BOOT} has: "
                               f"{have})")
        path, size = self._boot[name]
        start = out.tell()
        try:
            self._iso.get_file_from_iso_fp(cast(BinaryIO, out), iso_path=path)
        except PyCdlibException as e:
            raise ArchiveError(f"{self.label}: cannot read /{BOOT}/{name} "
                               f"({_reason(e)})") from e
        if out.tell() - start != size:  # pycdlib stops quietly at the end of a cut-off file
            raise ArchiveError(f"{self.label}: truncated: /{BOOT}/{name} has "
                               f"{out.tell() - start} of its {size} bytes")


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
