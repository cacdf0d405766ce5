"""Overlay trees as cpio entries: files, directories, symlinks, and `.j2` templates rendered.

Templates are Jinja2 with `{{ var }}` and `{% ... %}`; comments are `{## ... ##}` because shell's
`${#var}` would open a Jinja comment. Overlay files are root:root with mode 0644, or 0755 when the
source is executable (the same on every checkout, whatever its umask); the recipe's `[files]`
table sets other owners and modes. Paths are confined to the image root.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .newc import Entry

if TYPE_CHECKING:
    import jinja2

TEMPLATE_SUFFIX = ".j2"


@dataclass(frozen=True)
class OverlayFile:
    """An entry for the image and the overlay file it came from."""

    entry: Entry
    source: Path


def _environment() -> jinja2.Environment:
    import jinja2  # loaded for the first template: `import tcbuild` stays light

    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        comment_start_string="{##",
        comment_end_string="##}",
    )


def render(source: Path, text: str, context: Mapping[str, object]) -> str:
    """Render one template; an undefined variable names the file, line and variable."""
    import jinja2

    try:
        return _environment().from_string(text).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise InputError(f"{source}:{e.lineno}: template error: {e.message}") from e
    except jinja2.UndefinedError as e:
        match = re.match(r"'([^']+)' is undefined", str(e))
        if not match:
            raise InputError(f"{source}: template error: {e}") from e
        name = match[1]
        line = next((i for i, row in enumerate(text.splitlines(), 1)
                     if re.search(rf"{{[{{%][^}}]*\b{re.escape(name)}\b", row)), 0)
        raise InputError(f"{source}:{line}: undefined template variable '{name}'") from e
    except jinja2.TemplateError as e:
        raise InputError(f"{source}: template error: {e}") from e


def _file_mode(st: os.stat_result) -> int:
    return 0o755 if st.st_mode & 0o111 else 0o644


def _confined_link(relative: str, target: str, source: Path) -> None:
    """A relative symlink must not climb out of the image root (absolute ones stay inside it)."""
    if target.startswith("/"):
        return
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
    if resolved == ".." or resolved.startswith("../"):
        raise InputError(f"{source}: symlink target '{target}' escapes the image root")


def read_overlay(root: Path, context: Mapping[str, object], mtime: int) -> list[OverlayFile]:
    """Every path of one overlay tree, sorted, templates rendered, parents before children."""
    files: list[OverlayFile] = []
    names: dict[str, Path] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(directory)
        for name in sorted(dirnames + filenames):
            source = base / name
            relative = source.relative_to(root).as_posix()
            try:
                st = source.lstat()
                entry = _entry(source, relative, st, context, mtime)
            except OSError as e:
                raise InputError(f"{source}: cannot read overlay file: {e.strerror or e}") from e
            if entry.name in names:
                raise InputError(f"{source}: '{entry.name}' also comes from {names[entry.name]}")
            names[entry.name] = source
            files.append(OverlayFile(entry, source))
    files.sort(key=lambda f: f.entry.name.split("/"))
    return files


def _entry(
    source: Path, relative: str, st: os.stat_result, context: Mapping[str, object], mtime: int
) -> Entry:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return Entry(relative, stat.S_IFDIR | 0o755, 0, 0, 2, mtime, 0, 0, (0, 0), None)
    if stat.S_ISLNK(mode):
        target = str(source.readlink())
        _confined_link(relative, target, source)
        data = os.fsencode(target)
        return Entry(relative, stat.S_IFLNK | 0o777, 0, 0, 1, mtime, len(data), 0, (0, 0), data)
    if not stat.S_ISREG(mode):
        raise InputError(f"{source}: only files, directories and symlinks can be overlaid "
                         "(device nodes, fifos and sockets cannot)")
    data = source.read_bytes()
    name = relative
    if relative.endswith(TEMPLATE_SUFFIX):
        name = relative[: -len(TEMPLATE_SUFFIX)]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{source}: a template must be UTF-8 text") from e
        data = render(source, text, context).encode()
    return Entry(name, stat.S_IFREG | _file_mode(st), 0, 0, 1, mtime, len(data), 0, (0, 0), data)
