"""The initramfs: the base core's entries, kept exactly, plus extensions and overlays.

`compose` merges everything into a `Tree` (path -> entry and where it came from) without touching
the disk (`runs.py` cuts it into the image's cpio archives). A tree composed from the indexes
the cache keeps of the inputs (`store.py`) holds no data of theirs: it loads a file's
(`Tree.load`, by its sha256) only for a run of the image not compressed before.
The rules are the kernel's and Tiny Core's:
- an existing directory keeps its mode and owner: the kernel would re-apply whatever an entry
  says, even to a directory that already exists (`/tmp` 1777, `/opt` 2775 root:staff);
- an extension file never replaces an existing one (tce-load copies with `cp -ais`, answering no);
- overlays replace anything but a directory, in recipe order;
- hard links survive: a group keeps one inode and its data on one of its remaining names.
"""

from __future__ import annotations

import fnmatch
import hashlib
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config.recipe import FileAttributes
from ..errors import InputError
from ..formats.manifest import describe
from ..formats.newc import Entry
from .overlay import OverlayFile

BASE = "base"
GENERATED = "tcbuild"
TCE_INSTALLED = "usr/local/tce.installed"
BUILTIN = "tmp/builtin"
SETUP_LIST = "tmp/setup.lst"
TC_UID, STAFF_GID = 1001, 50


@dataclass(frozen=True)
class Item:
    """One path of the image: its entry, where it came from, its hard-link group (the base's
    or an overlay archive's).

    `facts` is the entry as `build.json` describes it (`manifest.describe`, without origin);
    an entry of the base or an extension comes with them and without its data (None), which
    `with_data` loads by the facts' sha256.
    """

    entry: Entry
    origin: str
    link_group: tuple[int, int, int] | None = None
    facts: Mapping[str, Any] | None = None


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
    extension_paths: dict[str, list[str]] = field(default_factory=dict)  # what each one added
    load: Callable[[str], bytes] | None = None  # data by sha256, for entries without theirs

    def is_dir(self, path: str) -> bool:
        item = self.items.get(path)
        return item is not None and stat.S_ISDIR(item.entry.mode)


def sort_key(path: str) -> tuple[str, ...]:
    """Sort key putting parents before children (and `.` first)."""
    return () if path == "." else tuple(path.split("/"))


def parent_of(path: str) -> str:
    return path.rpartition("/")[0] or "."


def _self_and_parents(path: str) -> Iterator[str]:
    while path != ".":
        yield path
        path = parent_of(path)


def _named(entry: Entry, path: str) -> Entry:
    return entry if entry.name == path else replace(entry, name=path)


Keep = Callable[[bytes, str], None]  # takes a file's data and its sha256 (`store.Writer.add`)


def read_base(parts: Iterable[Iterable[Entry]], keep: Keep | None = None) -> Tree:
    """The base core: every entry of every part and segment (a later duplicate wins), with its
    facts. `keep` takes every file's data as it passes, and the tree keeps none of it (but a
    hard-link group's, see `group_data`)."""
    tree = Tree()
    ids: dict[str, bytes] = {}
    for part, entries in enumerate(parts):
        for entry in entries:
            path = entry.path
            entry = _named(entry, path)
            group = None
            if path in ("etc/passwd", "etc/group"):
                ids[path] = entry.data or b""
            if stat.S_ISREG(entry.mode) and entry.nlink > 1:
                group = (part, entry.segment, entry.ino)
                tree.base_links.add(path)
                if entry.size:
                    tree.link_data[group] = entry.data or b""
                    if keep is not None:
                        keep(entry.data or b"", hashlib.sha256(entry.data or b"").hexdigest())
                tree.items[path] = Item(entry, BASE, group)
                continue
            facts = describe(entry)
            if keep is not None and stat.S_ISREG(entry.mode):
                keep(entry.data or b"", facts["sha256"])
                entry = replace(entry, data=None)
            tree.items[path] = Item(entry, BASE, None, facts)
    for path, item in tree.items.items():  # a group's facts: of its data, wherever it is
        if item.facts is None:
            tree.items[path] = replace(item, facts=describe(shared(tree, item)))
    tree.users = _ids(ids.get("etc/passwd", b""))
    tree.groups = _ids(ids.get("etc/group", b""))
    return tree


def _ids(data: bytes) -> dict[str, int]:
    """Names to numbers from the base's own passwd/group file (never the build host's)."""
    ids: dict[str, int] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            ids.setdefault(fields[0], int(fields[2]))
    return ids


def shared(tree: Tree, item: Item) -> Entry:
    """A hard-linked entry with its group's data (on whichever name it is)."""
    if item.link_group is None:
        return item.entry
    data = group_data(tree, item)
    return replace(item.entry, data=data, size=len(data))


def group_data(tree: Tree, item: Item) -> bytes:
    """A hard-link group's data: as read, or loaded by its sha256 (a tree from an index)."""
    assert item.link_group is not None
    data = tree.link_data.get(item.link_group)
    if data is None:
        digest = (item.facts or {}).get("sha256")
        data = tree.load(digest) if tree.load is not None and digest is not None else b""
        tree.link_data[item.link_group] = data
    return data


def with_data(tree: Tree, item: Item) -> Entry:
    """The item's entry with its data: its own, its link group's, or loaded by its sha256."""
    entry = shared(tree, item)
    if entry.data is None and stat.S_ISREG(entry.mode):
        if not entry.size:
            return replace(entry, data=b"")
        assert tree.load is not None and item.facts is not None, f"/{entry.path}: no data"
        entry = replace(entry, data=tree.load(item.facts["sha256"]))
    return entry


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


def add_extension(tree: Tree, name: str,
                  entries: Iterable[Entry | tuple[Entry, Mapping[str, Any]]]) -> bool:
    """Merge an unpacked extension; True when it carries a non-empty install script.

    Entries come with their `facts` when they come from an index (their data not loaded).
    """
    origin = f"extension:{name}"
    stem = name.removesuffix(".tcz")
    script = f"{TCE_INSTALLED}/{stem}"
    has_script = False
    added = tree.extension_paths.setdefault(name, [])
    for given in entries:
        entry, facts = given if isinstance(given, tuple) else (given, None)
        path = entry.path
        existing = tree.items.get(path)
        if existing is not None:
            if not (stat.S_ISDIR(entry.mode) and tree.is_dir(path)):
                tree.shadowed.append(f"{path}: {origin} kept {existing.origin}'s")
            continue
        if not tree.is_dir(parent_of(path)):
            raise InputError(f"{name}: {path}: its directory is not a directory in the image")
        tree.items[path] = Item(_named(entry, path), origin, None, facts)
        added.append(path)
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
        tree.extension_paths[name] = [f"{BUILTIN}/optional/{name}"]
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
    parent = parent_of(path)
    if parent != "." or "." in tree.items:
        _ensure_dir(tree, parent, 0o755, 0, 0, origin)
    entry = Entry(path, stat.S_IFDIR | mode, uid, gid, 2, tree.mtime, 0, 0, (0, 0), None)
    tree.items[path] = Item(entry, origin)


def add_overlay(tree: Tree, files: Iterable[OverlayFile]) -> None:
    """Overlay entries replace anything but directories; existing directories are kept as-is.

    An archive's hard links become link groups of their own, numbered below the base's.
    """
    number = -1 - len({group[0] for group in tree.link_data if group[0] < 0})
    groups: dict[str, tuple[int, int, int]] = {}
    for item in files:
        entry = item.entry
        path = entry.path
        origin = f"overlay:{item.source}"
        group = None
        if item.link is not None:
            group = groups.setdefault(item.link, (number, 0, len(groups)))
            tree.link_data[group] = entry.data or b""
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
        if not tree.is_dir(parent_of(path)):
            raise InputError(f"{item.source}: /{parent_of(path)} is not a directory in the image")
        tree.items[path] = Item(entry, origin, group)


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
        names = [p for p, other in tree.items.items() if other.link_group == item.link_group
                 ] if item.link_group is not None else [path]  # one inode, every name
        for name in names:
            linked = tree.items[name]
            tree.items[name] = replace(linked, entry=replace(linked.entry, mode=mode, uid=uid,
                                                             gid=gid))


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


def provenance(tree: Tree) -> Iterator[tuple[str, Item]]:
    """Every path with where it came from, sorted."""
    for path in sorted(tree.items, key=sort_key):
        yield path, tree.items[path]
