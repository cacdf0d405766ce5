"""The exception root: every failure tcbuild expects is a TcbuildError with a one-line message."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class TcbuildError(Exception):
    """A failure tcbuild can explain in one line; the CLI prints it and exits with `exit_code`."""

    exit_code = 1

    @property
    def lines(self) -> list[str]:
        """The message as the lines the CLI prints: one per problem."""
        return str(self).splitlines()


class InputError(TcbuildError):
    """Bad input from the user (a recipe, an argument): exit status 2."""

    exit_code = 2


class RecipeError(InputError):
    """One or more problems in a recipe, each naming the file and the key path."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class FetchError(TcbuildError):
    """A download failed on every mirror, or the cache could not provide a file."""


class ChecksumError(FetchError):
    """A downloaded or local file does not match its published checksum."""


class ArchiveError(TcbuildError):
    """An archive (cpio, gzip) is malformed."""


class FileError(TcbuildError):
    """A file or directory could not be read or written (an OSError, with the path it names)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    @classmethod
    def from_os(cls, error: OSError) -> FileError:
        """`<path>: <reason>` (`<path> -> <other path>: ...` for a rename)."""
        path = None if error.filename is None else os.fsdecode(error.filename)
        where = path or ""
        if error.filename2 is not None:
            where += f" -> {os.fsdecode(error.filename2)}"
        reason = error.strerror or str(error) or type(error).__name__
        return cls(f"{where}: {reason}" if where else reason, path)


def boundary(function: Callable[P, R]) -> Callable[P, R]:
    """The error boundary of a public function: whatever leaves it is a TcbuildError.

    An OSError becomes a `FileError` naming its path; an error of pycdlib (which raises its own
    exceptions and bare ones) an `ArchiveError`. Bugs (any other exception) pass as they are.
    """

    @functools.wraps(function)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except TcbuildError:
            raise
        except OSError as e:
            raise FileError.from_os(e) from e
        except Exception as e:
            if type(e).__module__.split(".")[0] != "pycdlib":
                raise
            lines = str(e).strip().splitlines()
            raise ArchiveError(f"ISO 9660: {lines[0] if lines else type(e).__name__}") from e

    return guarded


class StateError(TcbuildError):
    """A file tcbuild keeps (build.json, release.json, a cache ref) is malformed: one line
    naming the file and the key."""
