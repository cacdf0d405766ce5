"""The initramfs: the base core's entries, kept exactly, plus extensions and overlays.

`compose` merges everything into a `Tree` (path -> entry and where it came from) without touching
the disk; `repack` and `append_segment` turn a tree into cpio segments. The rules are the kernel's
and Tiny Core's:
- an existing directory keeps its mode and owner: the kernel would re-apply whatever an entry
  says, even to a directory that already exists (`/tmp` 1777, `/opt` 2775 root:staff);
- an extension file never replaces an existing one (tce-load copies with `cp -ais`, answering no);
- overlays replace anything but a directory, in recipe order;
- hard links survive: a group keeps one inode and its data on one of its remaining names.
"""

from __future__ import annotations

import fnmatch
import io
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import InputError
from .newc import Entry, NewcWriter
from .overlay import OverlayFile
from .recipe import FileAttributes

BASE = "base"
GENERATED = "tcbuild"
TCE_INSTALLED = "usr/local/tce.installed"
BUILTIN = "tmp/builtin"
SETUP_LIST = "tmp/setup.lst"
TC_UID, STAFF_GID = 1001, 50


@dataclass(frozen=True)
class Item:
    """One path of the image: its entry, where it came from, its hard-link group (base only)."""

    entry: Entry
    origin: str
    link_group: tuple[int, int, int] | None = None


@dataclass
class Tree:
    """The image being composed; paths have no leading `./` or `/`, the root is `.`."""

    mtime: int = 0  # the time of every entry tcbuild makes
    items: dict[str, Item] = field(default_factory=dict)
    link_data: dict[tuple[int, int, int], bytes] = field(default_factory=dict)
    base_links: set[str] = field(default_factory=set)  # paths hard-linked in the base
    users: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    shadowed: list[str] = field(default_factory=list)

    def is_dir(self, path: str) -> bool:
        item = self.items.get(path)
        return item is not None and stat.S_ISDIR(item.entry.mode)


def _key(path: str) -> tuple[str, ...]:
    """Sort key putting parents before children (and `.` first)."""
    return () if path == "." else tuple(path.split("/"))


def _parent(path: str) -> str:
    return path.rpartition("/")[0] or "."


def _self_and_parents(path: str) -> Iterator[str]:
    while path != ".":
        yield path
        path = _parent(path)


def _named(entry: Entry, path: str) -> Entry:
    return entry if entry.name == path else replace(entry, name=path)


def read_base(parts: Iterable[Iterable[Entry]], mtime: int = 0) -> Tree:
    """The base core: every entry of every part and segment; a later duplicate wins."""
    tree = Tree(mtime)
    for part, entries in enumerate(parts):
        for entry in entries:
            path = entry.path
            group = None
            if stat.S_ISREG(entry.mode) and entry.nlink > 1:
                group = (part, entry.segment, entry.ino)
                tree.base_links.add(path)
                if entry.size:
                    tree.link_data[group] = entry.data or b""
            tree.items[path] = Item(_named(entry, path), BASE, group)
    tree.users = _ids(tree, "etc/passwd")
    tree.groups = _ids(tree, "etc/group")
    return tree


def _ids(tree: Tree, path: str) -> dict[str, int]:
    """Names to numbers from the base's own passwd/group file (never the build host's)."""
    item = tree.items.get(path)
    ids: dict[str, int] = {}
    if item is None or not item.entry.data:
        return ids
    for line in item.entry.data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            ids.setdefault(fields[0], int(fields[2]))
    return ids


def remove(tree: Tree, patterns: tuple[str, ...], recipe: Path) -> None:
    """Drop base entries matching a path or glob (a directory takes its contents along)."""
    for i, pattern in enumerate(patterns):
        doomed = [path for path in tree.items
                  if any(fnmatch.fnmatchcase(p, pattern) for p in _self_and_parents(path))]
        if not doomed:
            raise InputError(f"{recipe}: image.remove[{i}]: '{pattern}' matches nothing in the "
                             "base")
        for path in doomed:
            del tree.items[path]


def add_extension(tree: Tree, name: str, entries: Iterable[Entry]) -> bool:
    """Merge an unpacked extension; True when it carries a non-empty install script."""
    origin = f"extension:{name}"
    stem = name.removesuffix(".tcz")
    script = f"{TCE_INSTALLED}/{stem}"
    has_script = False
    for entry in entries:
        path = entry.path
        existing = tree.items.get(path)
        if existing is not None:
            if not (stat.S_ISDIR(entry.mode) and tree.is_dir(path)):
                tree.shadowed.append(f"{path}: {origin} kept {existing.origin}'s")
            continue
        if not tree.is_dir(_parent(path)):
            raise InputError(f"{name}: {path}: its directory is not a directory in the image")
        tree.items[path] = Item(_named(entry, path), origin)
        has_script = has_script or (path == script and entry.size > 0)
    _ensure_dir(tree, TCE_INSTALLED, 0o775, TC_UID, STAFF_GID, GENERATED)
    if script not in tree.items:  # what tce-load leaves when there is no script: a marker
        marker = Entry(script, stat.S_IFREG | 0o644, TC_UID, STAFF_GID, 1, tree.mtime, 0, 0,
                       (0, 0), b"")
        tree.items[script] = Item(marker, origin)
    return has_script


def add_setup_list(tree: Tree, scripts: list[str]) -> None:
    """`/tmp/setup.lst`: tce-setup runs each script at boot, after every extension is there."""
    if scripts:
        data = "".join(f"/{TCE_INSTALLED}/{stem}\n" for stem in scripts).encode()
        entry = Entry(SETUP_LIST, stat.S_IFREG | 0o644, 0, 0, 1, tree.mtime, len(data), 0,
                      (0, 0), data)
        tree.items[SETUP_LIST] = Item(entry, GENERATED)


def add_onboot(tree: Tree, extensions: list[tuple[str, bytes, tuple[str, ...]]]) -> None:
    """`.tcz` files in `/tmp/builtin/optional` with `.dep`s and `onboot.lst`, for tce-setup."""
    _ensure_dir(tree, BUILTIN, 0o755, 0, 0, GENERATED)
    _ensure_dir(tree, f"{BUILTIN}/optional", 0o755, 0, 0, GENERATED)
    for name, data, deps in extensions:
        _add_file(tree, f"{BUILTIN}/optional/{name}", data, f"extension:{name}")
        if deps:
            _add_file(tree, f"{BUILTIN}/optional/{name}.dep",
                      "".join(f"{d}\n" for d in deps).encode(), GENERATED)
    listing = "".join(f"{name}\n" for name, _, _ in extensions).encode()
    _add_file(tree, f"{BUILTIN}/onboot.lst", listing, GENERATED)


def _add_file(tree: Tree, path: str, data: bytes, origin: str) -> None:
    entry = Entry(path, stat.S_IFREG | 0o644, 0, 0, 1, tree.mtime, len(data), 0, (0, 0), data)
    tree.items[path] = Item(entry, origin)


def _ensure_dir(tree: Tree, path: str, mode: int, uid: int, gid: int, origin: str) -> None:
    if tree.is_dir(path):
        return
    if path in tree.items:
        raise InputError(f"/{path} is not a directory in the base")
    parent = _parent(path)
    if parent != "." or "." in tree.items:
        _ensure_dir(tree, parent, 0o755, 0, 0, origin)
    entry = Entry(path, stat.S_IFDIR | mode, uid, gid, 2, tree.mtime, 0, 0, (0, 0), None)
    tree.items[path] = Item(entry, origin)


def add_overlay(tree: Tree, files: Iterable[OverlayFile]) -> None:
    """Overlay entries replace anything but directories; existing directories are kept as-is."""
    for item in files:
        entry = item.entry
        path = entry.path
        origin = f"overlay:{item.source}"
        existing = tree.items.get(path)
        if stat.S_ISDIR(entry.mode):
            if existing is None:
                tree.items[path] = Item(entry, origin)
            elif not stat.S_ISDIR(existing.entry.mode):
                raise InputError(f"{item.source}: a directory cannot replace /{path} "
                                 f"(from {existing.origin})")
            continue
        if existing is not None and stat.S_ISDIR(existing.entry.mode):
            raise InputError(f"{item.source}: cannot replace the directory /{path}")
        if not tree.is_dir(_parent(path)):
            raise InputError(f"{item.source}: /{_parent(path)} is not a directory in the image")
        tree.items[path] = Item(entry, origin)


def apply_attributes(tree: Tree, files: Mapping[str, FileAttributes], recipe: Path) -> None:
    """The recipe's `[files]` owners and modes, names looked up in the image's own passwd/group."""
    for path, attributes in files.items():
        key = f'{recipe}: files."/{path}"'
        item = tree.items.get(path)
        if item is None or not item.origin.startswith("overlay:"):
            raise InputError(f"{key}: not a file of any overlay")
        entry = item.entry
        mode = entry.mode
        if attributes.mode is not None:
            mode = stat.S_IFMT(mode) | attributes.mode
        uid = _resolve(attributes.owner, tree.users, f"{key}.owner", "user", entry.uid)
        gid = _resolve(attributes.group, tree.groups, f"{key}.group", "group", entry.gid)
        tree.items[path] = replace(item, entry=replace(entry, mode=mode, uid=uid, gid=gid))


def _resolve(value: str | int | None, names: dict[str, int], key: str, kind: str,
             default: int) -> int:
    if value is None:
        return default
    if isinstance(value, int):
        return value
    if value not in names:
        raise InputError(f"{key}: no {kind} '{value}' in the image's /etc/"
                         f"{'passwd' if kind == 'user' else 'group'}")
    return names[value]


def _linked(tree: Tree) -> dict[str, Entry]:
    """Base hard-link groups after removals and replacements: one ino, the data on one name."""
    groups: dict[tuple[int, int, int], list[str]] = {}
    for path in sorted(tree.items, key=_key):
        item = tree.items[path]
        if item.link_group is not None and item.origin == BASE:
            groups.setdefault(item.link_group, []).append(path)
    fixed: dict[str, Entry] = {}
    for number, (group, paths) in enumerate(groups.items(), 1):
        data = tree.link_data.get(group, b"")
        for i, path in enumerate(paths):
            body = data if i == 0 else b""
            fixed[path] = replace(tree.items[path].entry, ino=number, nlink=len(paths),
                                  data=body, size=len(body))
    return fixed


def check(tree: Tree) -> None:
    """Every path's parent must be a directory of the image."""
    for path in tree.items:
        if path != "." and not tree.is_dir(_parent(path)):
            raise InputError(f"/{path}: /{_parent(path)} is not a directory in the image")


def repack(tree: Tree, segments: int = 2) -> list[bytes]:
    """The whole image as cpio segments of similar size, each a complete archive.

    Entries are sorted (parents first); hard-linked ones go last, all in the last segment,
    because the kernel forgets link groups at each `TRAILER!!!`.
    """
    check(tree)
    linked = _linked(tree)
    ordered = sorted((p for p in tree.items if p not in linked), key=_key)
    entries = [tree.items[p].entry for p in ordered]
    entries += [linked[p] for p in sorted(linked, key=_key)]
    return _split(entries, segments, set(linked))


def append_segments(tree: Tree, segments: int = 2) -> list[bytes]:
    """What the base lacks, with the base's own entry for every directory on the way."""
    check(tree)
    added = {p for p, item in tree.items.items() if item.origin != BASE}
    for path in list(added):
        if path in tree.base_links:
            raise InputError(f"/{path} is a hard link in the base; replacing it in append "
                             "mode would change every name of it (use output = \"repack\")")
        parent = _parent(path)
        while parent != "." and parent not in added:
            added.add(parent)
            parent = _parent(parent)
    return _split([tree.items[p].entry for p in sorted(added, key=_key)], segments, set())


def _split(entries: list[Entry], segments: int, linked: set[str]) -> list[bytes]:
    """Consecutive runs of similar size, each a complete archive (one per core to compress).

    Order is kept, so parents still come first; `linked` names stay together at the end.
    """
    total = sum(e.size for e in entries) or 1
    chunks: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        if (size >= total * len(chunks) / segments and len(chunks) < segments
                and entry.name not in linked):
            chunks.append([])
        chunks[-1].append(entry)
        size += entry.size
    return [_archive(chunk) for chunk in chunks if chunk]


def _archive(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with NewcWriter(out) as writer:
        for entry in entries:
            writer.add(entry)
    return out.getvalue()


def provenance(tree: Tree) -> Iterator[tuple[str, Item]]:
    """Every path with where it came from, sorted."""
    for path in sorted(tree.items, key=_key):
        yield path, tree.items[path]
