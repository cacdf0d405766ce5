"""Overlays as cpio entries: a directory tree, or an archive of one, with files, directories,
symlinks, hard links (archives) and `.j2` templates rendered.

Templates are Jinja2 with `{{ var }}` and `{% ... %}`; comments are `{## ... ##}` because shell's
`${#var}` would open a Jinja comment. A build keeps what it rendered in the cache (`Templates`),
so a rebuild renders, and loads Jinja2, only for a template or a value that changed. Every entry
is root:root and carries the build's time; the recipe's `[files]` table sets other owners and
modes.

- A directory's files are mode 0644, or 0755 when the source is executable (the same on every
  checkout, whatever its umask); its directories are 0755.
- An archive (`.tar`, `.tar.gz`, `.tar.xz`, `.zip`, `.cpio`) is read as a stream through
  libarchive, nothing extracted: its members keep their modes, symlink targets and hard links
  (a CI artifact of site configuration is an overlay as it is); their owners are the machine's
  that made it, so they are not kept.

Paths are confined to the image root: absolute names, `..`, links that climb out, device nodes,
fifos and sockets are refused, each with one line naming the overlay and the path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import posixpath
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.recipe import archive_suffix
from ..errors import InputError
from ..formats.newc import Entry
from ..formats.tomlfile import CONTROL
from ..sources.cache import Cache
from ..version import FORMAT, __version__

if TYPE_CHECKING:
    import jinja2

TEMPLATE_SUFFIX = ".j2"
NOT_OVERLAID = ("only files, directories{} and symlinks can be overlaid (device nodes, fifos and "
                "sockets cannot)")


@dataclass(frozen=True)
class OverlayFile:
    """An entry for the image and where it came from (a file, or `archive:member`)."""

    entry: Entry
    source: str
    link: str | None = None  # a hard link: the first name of its group in the same archive


@dataclass(frozen=True)
class Templates:
    """What `.j2` files are rendered with: the values and, with a cache, what was rendered
    before from the same text and values by the same Jinja2 (taken from it, Jinja2 not loaded).
    """

    context: Mapping[str, object]
    cache: Cache | None = None

    def render(self, source: str, text: str) -> str:
        cache, version = self.cache, _jinja_version()
        if cache is None or version is None:
            return render(source, text, self.context)
        named = {k: v for k, v in self.context.items() if re.search(rf"\b{re.escape(k)}\b", text)}
        facts = ["rendered", FORMAT, __version__, version, text, named]  # values by their name
        key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()
        kept = cache.derived(key)
        if kept is not None:
            return kept.decode()
        rendered = render(source, text, self.context)
        with contextlib.suppress(OSError):  # a cache that cannot take it: render again
            cache.store_derived(key, [rendered.encode()])
        return rendered


@functools.cache
def _jinja_version() -> str | None:
    """The installed Jinja2, known without loading it (its `.dist-info` beside it), or None."""
    spec = importlib.util.find_spec("jinja2")
    if spec is None or spec.origin is None:
        return None
    found = list(Path(spec.origin).parent.parent.glob("[Jj]inja2-*.dist-info"))
    return found[0].name if len(found) == 1 else None


def _environment() -> jinja2.Environment:
    import jinja2  # loaded for the first template: `import tcbuild` stays light

    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        comment_start_string="{##",
        comment_end_string="##}",
    )


def render(source: str, text: str, context: Mapping[str, object]) -> str:
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


def _confined_link(relative: str, target: str, source: str) -> None:
    """A relative symlink must not climb out of the image root (absolute ones stay inside it)."""
    if CONTROL.search(target):
        raise InputError(f"{source}: symlink target {json.dumps(target)} holds a control "
                         "character")
    if target.startswith("/"):
        return
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
    if resolved == ".." or resolved.startswith("../"):
        raise InputError(f"{source}: symlink target '{target}' escapes the image root")


def _directory(name: str, perm: int, mtime: int) -> Entry:
    return Entry(name, stat.S_IFDIR | perm, 0, 0, 2, mtime, 0, 0, (0, 0), None)


def _symlink(name: str, target: bytes, mtime: int) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, 0, 0, 1, mtime, len(target), 0, (0, 0), target)


def _file(name: str, perm: int, data: bytes, source: str, templates: Templates,
          mtime: int) -> Entry:
    """A regular file; a template (`NAME.j2`) is rendered into NAME."""
    if name.endswith(TEMPLATE_SUFFIX):
        name = name[: -len(TEMPLATE_SUFFIX)]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{source}: a template must be UTF-8 text") from e
        data = templates.render(source, text).encode()
    return Entry(name, stat.S_IFREG | perm, 0, 0, 1, mtime, len(data), 0, (0, 0), data)


def read_overlay(source: Path, context: Mapping[str, object] | Templates, mtime: int
                 ) -> list[OverlayFile]:
    """Every path of one overlay (a tree or an archive), sorted, parents before children;
    templates rendered with `context`'s values."""
    templates = context if isinstance(context, Templates) else Templates(context)
    files = _read_archive(source, templates, mtime) if archive_suffix(source) else _read_tree(
        source, templates, mtime)
    files.sort(key=lambda f: f.entry.name.split("/"))
    return files


def overlay_digest(source: Path) -> str:
    """Everything of an overlay that reaches the image: an archive's bytes; a tree's names,
    types, exec bits and bytes."""
    h = hashlib.sha256()
    if archive_suffix(source):
        with source.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()
    for directory, dirnames, filenames in sorted(os.walk(source)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(directory) / name
            h.update(path.relative_to(source).as_posix().encode() + b"\0")
            if path.is_symlink():
                h.update(b"L" + str(path.readlink()).encode())
            elif path.is_file():  # exec as `_tree_entry` writes it: any x bit, whoever reads
                h.update(b"X" if path.stat().st_mode & 0o111 else b"F")
                h.update(hashlib.sha256(path.read_bytes()).digest())
            h.update(b"\0")
    return h.hexdigest()


# -- directory trees ---------------------------------------------------------------------------

def _read_tree(root: Path, templates: Templates, mtime: int) -> list[OverlayFile]:
    files: list[OverlayFile] = []
    names: dict[str, Path] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(directory)
        for name in sorted(dirnames + filenames):
            source = base / name
            relative = source.relative_to(root).as_posix()
            if CONTROL.search(relative):
                raise InputError(f"{root}: the name {json.dumps(relative)} holds a control "
                                 "character")
            try:
                entry = _tree_entry(source, relative, source.lstat(), templates, mtime)
            except OSError as e:
                raise InputError(f"{source}: cannot read overlay file: {e.strerror or e}") from e
            if entry.name in names:
                raise InputError(f"{source}: '{entry.name}' also comes from {names[entry.name]}")
            names[entry.name] = source
            files.append(OverlayFile(entry, str(source)))
    return files


def _tree_entry(
    source: Path, relative: str, st: os.stat_result, templates: Templates, mtime: int
) -> Entry:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return _directory(relative, 0o755, mtime)
    if stat.S_ISLNK(mode):
        target = str(source.readlink())
        _confined_link(relative, target, str(source))
        return _symlink(relative, os.fsencode(target), mtime)
    if not stat.S_ISREG(mode):
        raise InputError(f"{source}: {NOT_OVERLAID.format('')}")
    perm = 0o755 if mode & 0o111 else 0o644
    return _file(relative, perm, source.read_bytes(), str(source), templates, mtime)


# -- archives ----------------------------------------------------------------------------------

def _libarchive_names(suffix: str) -> tuple[str, str]:
    """The libarchive format and filter an archive's suffix stands for (nothing else is read)."""
    kind = "zip" if suffix == ".zip" else "cpio" if suffix == ".cpio" else "tar"
    return kind, {".gz": "gzip", ".xz": "xz"}.get(suffix[suffix.rfind("."):], "none")


def _member_name(archive: Path, raw: str) -> str:
    """A member's path inside the image root (`.` for the root itself), or an `InputError`."""
    if CONTROL.search(raw):
        raise InputError(f"{archive}: the member name {json.dumps(raw)} holds a control "
                         "character")
    if raw.startswith("/"):
        raise InputError(f"{archive}: '{raw}' is an absolute path (members are relative to "
                         "the image root)")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{archive}: '{raw}' climbs out of the image root ('..')")
    return "/".join(parts) or "."


def _data(member: Any) -> bytes:
    return b"".join(bytes(block) for block in member.get_blocks())


def _read_archive(archive: Path, templates: Templates, mtime: int) -> list[OverlayFile]:
    import libarchive  # loaded for the first archive overlay: `import tcbuild` stays light
    from libarchive.exception import ArchiveError as LibarchiveError

    suffix = archive_suffix(archive) or ""
    kind, compression = _libarchive_names(suffix)
    reader = _ArchiveReader(archive, templates, mtime)
    try:
        with archive.open("rb") as stream, libarchive.stream_reader(
                stream, kind, compression) as members:
            for member in members:
                reader.add(member)
    except LibarchiveError as e:
        reason = (getattr(e, "msg", None) or "damaged or truncated data").splitlines()[0]
        raise InputError(f"{archive}: not a readable {suffix} archive ({reason})") from e
    except OSError as e:
        raise InputError(f"{archive}: cannot read overlay archive: {e.strerror or e}") from e
    return reader.files()


class _ArchiveReader:
    """The members of one archive, in its order; hard links joined into groups."""

    def __init__(self, archive: Path, templates: Templates, mtime: int) -> None:
        self.archive = archive
        self.templates = templates
        self.mtime = mtime
        self.entries: dict[str, OverlayFile] = {}  # by the name in the image
        self.members: dict[str, str] = {}  # member name -> name in the image (templates differ)
        self.groups: dict[str, list[str]] = {}  # first name -> every name of a hard-link group
        self.heads: dict[str, str] = {}  # a later name of a group -> its first

    def add(self, member: Any) -> None:
        raw = self.text(member.pathname, f"{self.archive}: a member name")
        name = _member_name(self.archive, raw)
        source = f"{self.archive}:{name}"
        if name == ".":
            if not member.isdir:
                raise InputError(f"{source}: the image root can only be a directory")
            return  # the image's root stays the base's
        if name in self.members:
            raise InputError(f"{source}: appears twice in the archive")
        perm = member.mode & 0o7777
        target = self.text(member.linkpath, f"{source}: the link target")
        if member.islnk:
            entry = self.hard_link(name, target, member, source)
        elif member.issym:
            _confined_link(name, target, source)
            entry = _symlink(name, target.encode("utf-8", "surrogateescape"), self.mtime)
        elif member.isdir:
            entry = _directory(name, perm, self.mtime)
        elif member.isreg:
            entry = _file(name, perm, _data(member), source, self.templates, self.mtime)
        else:
            raise InputError(f"{source}: {NOT_OVERLAID.format(', hard links')}")
        if entry.name in self.entries:
            raise InputError(f"{source}: '{entry.name}' also comes from "
                             f"{self.entries[entry.name].source}")
        self.members[name] = entry.name
        self.entries[entry.name] = OverlayFile(entry, source)

    @staticmethod
    def text(value: str | bytes | None, what: str) -> str:
        """A name as libarchive gives it: text, or bytes that are not UTF-8 (refused)."""
        if isinstance(value, bytes):
            raise InputError(f"{what} is not UTF-8 text ({value!r})")
        return value or ""

    def hard_link(self, name: str, target: str, member: Any, source: str) -> Entry:
        """Another name of an earlier regular file. The group's data may come with any of its
        names (newc cpio carries it with the last)."""
        try:
            first = _member_name(self.archive, target)
        except InputError:
            first = ""
        item = self.entries.get(self.members.get(first, ""))
        if item is None or not stat.S_ISREG(item.entry.mode):
            raise InputError(f"{source}: hard link to '{target}', which is not an earlier file "
                             "of the archive")
        if self.members[first] != first or name.endswith(TEMPLATE_SUFFIX):
            raise InputError(f"{source}: a template cannot be hard-linked")
        head = self.heads.get(first, first)
        self.heads[name] = head
        group = self.groups.setdefault(head, [head])
        group.append(name)
        if member.size:
            data = _data(member)
            for other in group[:-1]:
                linked = self.entries[other]
                self.entries[other] = replace(linked, entry=replace(linked.entry, data=data,
                                                                    size=len(data)))
        return replace(self.entries[head].entry, name=name)

    def files(self) -> list[OverlayFile]:
        """Every entry; a hard-link group's names share its data, count and first name; a
        parent directory the archive has no entry for made 0755 root:root."""
        for name in list(self.entries):
            parent = posixpath.dirname(name)
            while parent and parent not in self.entries:
                self.entries[parent] = OverlayFile(_directory(parent, 0o755, self.mtime),
                                                   f"{self.archive}:{parent}")
                parent = posixpath.dirname(parent)
        for head, names in self.groups.items():
            for name in names:
                item = self.entries[name]
                self.entries[name] = replace(item, link=head,
                                             entry=replace(item.entry, nlink=len(names)))
        return list(self.entries.values())


