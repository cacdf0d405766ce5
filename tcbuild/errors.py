"""The exception root: every failure tcbuild expects is a TcbuildError with a one-line message."""

from __future__ import annotations

from collections.abc import Iterable


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
