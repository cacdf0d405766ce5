"""The image cut into runs of entries, each a complete cpio archive in a gzip member of its own.

`repack` cuts the whole image (sorted, parents first, hard links together at the end);
`append_groups` says what append mode adds to the base, one group per extension and one for
the rest. Where runs end (`split`) depends on the entries alone, so the same entries are cut in
the same places by every build, and an edit moves at most the cuts next to it.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Iterable
from dataclasses import replace

from ..errors import InputError
from ..formats.newc import Entry, NewcWriter
from .compose import BASE, Item, Tree, group_data, parent_of, sort_key


def _linked(tree: Tree) -> dict[str, Item]:
    """Hard-link groups after removals and replacements: one ino, the data on one name."""
    groups: dict[tuple[int, int, int], list[str]] = {}
    for path in sorted(tree.items, key=sort_key):
        item = tree.items[path]
        if item.link_group is not None:
            groups.setdefault(item.link_group, []).append(path)
    fixed: dict[str, Item] = {}
    for number, paths in enumerate(groups.values(), 1):
        data = group_data(tree, tree.items[paths[0]])
        for i, path in enumerate(paths):
            body = data if i == 0 else b""
            item = tree.items[path]
            entry = replace(item.entry, ino=number, nlink=len(paths), data=body, size=len(body))
            fixed[path] = Item(entry, item.origin)
    return fixed


def check(tree: Tree) -> None:
    """Every path's parent must be a directory of the image."""
    for path in tree.items:
        if path != "." and not tree.is_dir(parent_of(path)):
            raise InputError(f"/{path}: /{parent_of(path)} is not a directory in the image")


def repack(tree: Tree) -> list[list[Item]]:
    """The whole image as runs of items (see `split`), each to be one archive.

    Entries are sorted (parents first); hard-linked ones go last, all in the last run,
    because the kernel forgets link groups at each `TRAILER!!!`.
    """
    check(tree)
    linked = _linked(tree)
    ordered = sorted((p for p in tree.items if p not in linked), key=sort_key)
    items = [tree.items[p] for p in ordered]
    items += [linked[p] for p in sorted(linked, key=sort_key)]
    return _split(items, set(linked))


def append_groups(tree: Tree) -> list[tuple[str | None, list[str]]]:
    """What the base lacks, as the paths of one group per extension (what it added, with
    the directories it needs that the base lacks) and a last group (None) of the rest, with
    the base's own entry for every directory on the way. Each group's parents come first in
    it or in a group before it, so the groups can become archives of their own.
    """
    check(tree)
    added = {p for p, item in tree.items.items() if item.origin != BASE}
    for path in sorted(added, key=sort_key):
        if path in tree.base_links:
            raise InputError(f"/{path} is a hard link in the base; replacing it in append "
                             "mode would change every name of it (use output = \"repack\")")
        if tree.items[path].link_group is not None:
            raise InputError(f"{tree.items[path].origin.removeprefix('overlay:')}: a hard link; "
                             "append mode cannot keep an overlay's hard links (use output = "
                             "\"repack\")")
    groups: list[tuple[str | None, list[str]]] = []
    done: set[str] = set()
    for name, paths in tree.extension_paths.items():
        origin = f"extension:{name}"
        group = set()
        for path in paths:
            item = tree.items.get(path)
            if item is None or item.origin != origin or path in done:  # an overlay replaced it
                continue
            group.add(path)
            parent = parent_of(path)
            while parent != "." and parent in added and parent not in done:
                group.add(parent)
                parent = parent_of(parent)
        if group:
            groups.append((name, sorted(group, key=sort_key)))
            done |= group
    rest = added - done
    for path in added:  # the directories on the way, the base's own entries included
        parent = parent_of(path)
        while parent != "." and parent not in rest:
            if parent not in done:
                rest.add(parent)
            parent = parent_of(parent)
    if rest:
        groups.append((None, sorted(rest, key=sort_key)))
    return groups


def append_runs(tree: Tree) -> list[list[Item]]:
    """What append mode adds to the base, as runs: each extension's (where the entries say),
    then the rest (`append_groups`)."""
    return [run for _, paths in append_groups(tree)
            for run in split([tree.items[p] for p in paths])]


# Where runs end: after an entry whose name hashes to 0 modulo `CUT_EVERY` once a run holds
# `MIN_RUN` bytes of data, and before an entry that would take it past `MAX_RUN`. The rule looks
# at the entries alone (never at a cache or the number of cores), so every build of the same
# entries cuts in the same places, and an edited, added or removed entry moves at most the
# cuts next to it: the other runs keep their bytes, and their compressed members can be reused.
MIN_RUN = 512 << 10
MAX_RUN = 4 << 20
CUT_EVERY = 64


def split(items: list[Item]) -> list[list[Item]]:
    """Consecutive runs of items, cut where their entries say (see `MIN_RUN`)."""
    return _split(items, set())


def _split(items: list[Item], linked: set[str]) -> list[list[Item]]:
    """Consecutive runs of at most `MAX_RUN` bytes of data, or one entry when it is bigger.

    Order is kept, so parents still come first; `linked` names stay together at the end.
    """
    chunks: list[list[Item]] = [[]]
    size = 0
    for item in items:
        entry = item.entry
        if chunks[-1] and size + entry.size > MAX_RUN and entry.name not in linked:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += entry.size
        if (size >= MIN_RUN and entry.name not in linked
                and zlib.crc32(entry.name.encode("utf-8", "surrogateescape")) % CUT_EVERY == 0):
            chunks.append([])
            size = 0
    return [c for c in chunks if c]


def archive(entries: Iterable[Entry]) -> bytes:
    """One complete newc archive (a segment ending in `TRAILER!!!`)."""
    out = io.BytesIO()
    with NewcWriter(out) as writer:
        for entry in entries:
            writer.add(entry)
    return out.getvalue()


def content_digest(item: Item) -> str:
    """The sha256 of what the entry carries (a file's data, a symlink's target, else none)."""
    facts = item.facts
    if facts is not None and "sha256" in facts and item.entry.data is None:
        return str(facts["sha256"])
    return hashlib.sha256(item.entry.data or b"").hexdigest()
