"""What a boot script runs by absolute path: read from its shell text, nothing executed.

`/opt/bootlocal.sh` (and `bootsync.sh`) and the overlay's shell templates start programs by
absolute path, often through a variable (`DHCLIENT=/usr/local/sbin/dhclient`, then
`"$DHCLIENT" ... -sf "$DHCLIENT_SCRIPT"`). The check (`rules.py`) looks each one up in the
image. Read the way a reader skims shell, not the way sh parses it: a command is the first word
of a line or of what follows `;`, `&&`, `||`, `|`, `&`, `(`, `{`, `$(` or a backquote (after
`then`, `do`, `exec`, `nohup`, ... and `NAME=value` words), a literal absolute path or a
variable assigned one on a line of its own; `.`/`source` reads a file; dhclient's `-sf` names
the script it runs. Paths under what exists only at run time (`/proc`, `/tmp`, `/mnt`, ...) are
left alone.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

BOOT_SCRIPTS = ("opt/bootlocal.sh", "opt/bootsync.sh")
TEMPLATE_ORIGIN = re.compile(r"overlay:.*\.j2")  # an overlay file rendered from a template
RUNTIME = ("proc", "sys", "dev", "tmp", "run", "mnt", "media", "home", "var")
SEPARATORS = re.compile(r"\$\(|`|&&|\|\||[;|&(){}]")
LEADERS = frozenset({"then", "do", "else", "elif", "if", "while", "until", "!", "exec",
                     "nohup", "command", "time", "builtin"})
SOURCE = frozenset({".", "source"})
RUNS_OPTIONS = frozenset({"-sf"})  # dhclient -sf SCRIPT
ASSIGNMENT = re.compile(r"(?:export\s+|readonly\s+)?([A-Za-z_]\w*)=(['\"]?)(/[^'\"\s]*)\2")
ASSIGNMENT_WORD = re.compile(r"[A-Za-z_]\w*=\S*")
PATH = re.compile(r"/[\w.+@/-]+")
VARIABLE = re.compile(r"\$\{?([A-Za-z_]\w*)\}?")
SHELLS = re.compile(r"(?:ba|da|k|a)?sh")


@dataclass(frozen=True)
class Run:
    """A file a script runs (or, `sourced`, reads with `.`), by its path without the leading
    `/`, and the line that says so."""

    path: str
    sourced: bool
    line: int


def is_shell(path: str, text: str) -> bool:
    """A shell script: `#!` a shell (or `env` one), named `*.sh`, or with shellcheck's
    `# shellcheck shell=` directive on its first line."""
    first = text.lstrip().split("\n", 1)[0]
    if first.startswith("#!"):
        words = first[2:].split()
        names = [posixpath.basename(w) for w in words[:2]]
        return bool(names) and (SHELLS.fullmatch(names[0]) is not None or (
            names[0] == "env" and len(names) > 1 and SHELLS.fullmatch(names[1]) is not None)
            or names[0] == "busybox")
    return path.endswith(".sh") or first.startswith("# shellcheck shell=")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Logical lines (a trailing backslash joins the next), without comments."""
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if line.lstrip().startswith("#"):
            line = ""
        line = re.sub(r"(^|\s)#.*$", "", line)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def _path(word: str, variables: dict[str, str]) -> str | None:
    word = word.strip("'\"")
    match = VARIABLE.fullmatch(word)
    if match:
        word = variables.get(match[1], "")
    if not PATH.fullmatch(word):
        return None
    path = posixpath.normpath(word).lstrip("/")
    return None if not path or path.split("/", 1)[0] in RUNTIME else path


def runs(text: str) -> Iterator[Run]:
    """Every file the script runs or sources by absolute path, in order, once each."""
    variables: dict[str, str] = {}
    seen: set[tuple[str, bool]] = set()
    for number, line in _lines(text):
        assigned = ASSIGNMENT.fullmatch(line.strip())
        if assigned:
            variables[assigned[1]] = assigned[3]
            continue
        for segment in SEPARATORS.split(line):
            words = segment.split()
            while words and (words[0] in LEADERS or ASSIGNMENT_WORD.fullmatch(words[0])):
                words.pop(0)
            sourced = bool(words) and words[0] in SOURCE
            found = [(_path(words[1 if sourced else 0], variables), sourced)] if words[
                sourced:] else []
            found += [(_path(after, variables), False)
                      for option, after in zip(words, words[1:], strict=False)
                      if option in RUNS_OPTIONS]
            for path, how in found:
                if path is not None and (path, how) not in seen:
                    seen.add((path, how))
                    yield Run(path, how, number)
