"""`build.json`: what went into a build and where every file of the image came from.

It also lets `inspect` list an image with provenance and `diff` compare two builds.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeGuard, cast

from ..errors import InputError, StateError, boundary
from .newc import Entry, iter_initramfs
from .statefile import Fields, is_plain_name

MANIFEST = "build.json"
TYPES = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
         stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}


def file_sha256(path: Path) -> str:
    """A file's sha256, read a MiB at a time."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def describe(entry: Entry, origin: str | None = None) -> dict[str, Any]:
    """One entry as JSON-friendly facts (content by sha256, never the bytes)."""
    kind = TYPES.get(stat.S_IFMT(entry.mode), "other")
    facts: dict[str, Any] = {
        "path": entry.path, "type": kind, "mode": f"{stat.S_IMODE(entry.mode):04o}",
        "uid": entry.uid, "gid": entry.gid, "mtime": entry.mtime,
    }
    if kind == "file":
        facts["size"] = entry.size
        facts["sha256"] = hashlib.sha256(entry.data or b"").hexdigest()
        if entry.nlink > 1:
            facts["nlink"] = entry.nlink
    elif kind == "symlink":
        facts["target"] = (entry.data or b"").decode("utf-8", "surrogateescape")
    elif kind in ("char", "block"):
        facts["rdev"] = list(entry.rdev)
    if origin is not None:
        facts["origin"] = origin
    return facts


@dataclass(frozen=True)
class FileRecord:
    """A file a build took or wrote: its name, sha256 and size."""

    name: str
    sha256: str
    size: int

    @classmethod
    def read(cls, fields: Fields) -> FileRecord:
        return cls(fields.string("name"), fields.sha256("sha256"), fields.number("size"))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """`build.json`, checked: what went in, what came out, where every entry came from."""

    tcbuild: str
    build_id: str
    recipe: str
    name: str
    kernel_version: str
    settings: Mapping[str, Any]
    inputs: tuple[FileRecord, ...]
    kernel: FileRecord
    initrd: FileRecord
    shadowed: tuple[str, ...]
    entries: tuple[Mapping[str, Any], ...]  # `describe` facts, each with its "origin"
    check: Mapping[str, Any] | None = None  # what the build's check found (`checkrun`)

    @classmethod
    def parse(cls, text: str, file: str) -> Manifest:
        return cls.read(Fields.parse(text, file))

    @classmethod
    def read(cls, f: Fields) -> Manifest:
        outputs = f.obj("outputs")
        kernel, initrd = FileRecord.read(outputs.obj("kernel")), FileRecord.read(
            outputs.obj("initrd"))
        for key, record in (("kernel", kernel), ("initrd", initrd)):
            if not is_plain_name(record.name) or record.name == MANIFEST:
                outputs.obj(key).fail("name", "not a plain file name beside build.json")
        if kernel.name == initrd.name:
            outputs.obj("initrd").fail("name", "the same name as the kernel")
        shadowed = f.array("shadowed")
        if not all(isinstance(line, str) for line in shadowed):
            f.fail("shadowed", "not a list of strings")
        entries = cast(list[dict[str, Any]], f.array("entries"))  # checked below
        if not all(map(_plain_entry, entries)):  # thousands: a quick look, then one that names
            for entry in f.objects("entries"):  # what is wrong
                entry.string("path"), entry.string("origin"), entry.number("mtime")
        return cls(f.string("tcbuild"), f.sha256("build_id"), f.string("recipe"),
                   f.string("name"), f.string("kernel_version"), f.obj("settings").data,
                   tuple(FileRecord.read(i) for i in f.objects("inputs")), kernel, initrd,
                   tuple(str(line) for line in shadowed), tuple(entries),
                   f.obj("check").data if f.has("check") else None)

    def text(self) -> bytes:
        """`build.json`: indented, one entry per line (quick to write, easy to diff)."""
        check = None if self.check is None else {**self.check, "findings": []}
        head = json.dumps({
            "tcbuild": self.tcbuild, "build_id": self.build_id, "recipe": self.recipe,
            "name": self.name, "kernel_version": self.kernel_version,
            "settings": self.settings, "inputs": [i.to_json() for i in self.inputs],
            "outputs": {"kernel": self.kernel.to_json(), "initrd": self.initrd.to_json()},
            "shadowed": list(self.shadowed), "entries": [],
            **({"check": check} if check is not None else {}),
        }, indent=1, sort_keys=True)
        encode = json.JSONEncoder(sort_keys=True).encode
        for indent, key, rows in ((" ", "entries", self.entries),
                                  ("  ", "findings", (self.check or {}).get("findings", ()))):
            lines = f",\n{indent} ".join(map(encode, rows))
            if lines:  # one row per line
                head = head.replace(f'\n{indent}"{key}": []',
                                    f'\n{indent}"{key}": [\n{indent} {lines}\n{indent}]', 1)
        return (head + "\n").encode()


def _plain_entry(entry: object) -> TypeGuard[dict[str, Any]]:
    """What `Manifest.read` asks of an entry: an object with a path, an origin and an mtime."""
    return (isinstance(entry, dict) and isinstance(entry.get("path"), str)
            and isinstance(entry.get("origin"), str) and type(entry.get("mtime")) is int
            and entry["mtime"] >= 0)


@boundary
def read_manifest(directory: Path) -> Manifest | None:
    """The directory's `build.json`, checked; None when it has none."""
    path = directory / MANIFEST
    try:
        return Manifest.read(Fields.read(path))
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Listing:
    """An image's entries as the kernel leaves them (a later duplicate wins), with origins."""

    source: Path
    entries: dict[str, dict[str, Any]]
    manifest: Manifest | None


@dataclass(frozen=True)
class Image:
    """An initramfs on disk: its entries as the kernel leaves them (hard-linked data on every
    name), with the origins its `build.json` records when it is that build's."""

    source: Path
    entries: list[Entry]
    origins: dict[str, str]
    manifest: Manifest | None


def read_image(target: Path) -> Image:
    """A build directory (its `build.json` names the initrd) or an initramfs file."""
    manifest: Manifest | None
    if target.is_dir():
        manifest = read_manifest(target)
        if manifest is None:
            raise InputError(f"{target}: no {MANIFEST} here (not a tcbuild output directory)")
        image = target / manifest.initrd.name
    else:
        image = target
        try:
            manifest = read_manifest(target.parent)
        except StateError:
            manifest = None  # a file beside the image, not the image: provenance unknown
        if manifest is not None and manifest.initrd.name != target.name:
            manifest = None
    if not image.is_file():
        raise InputError(f"{image}: no such image")
    origins: dict[str, str] = {}
    if manifest is not None:
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        if digest == manifest.initrd.sha256:
            origins = {e["path"]: e["origin"] for e in manifest.entries}
        else:
            manifest = None
    raw = list(iter_initramfs(image))
    shared = _link_data(raw)
    entries = []
    for e in raw:
        data = shared.get((e.segment, e.ino)) if e.nlink > 1 and stat.S_ISREG(e.mode) else None
        entries.append(e if data is None else replace(e, data=data, size=len(data)))
    return Image(image, entries, origins, manifest)


@boundary
def load_listing(target: Path) -> Listing:
    """A build directory (its `build.json` names the initrd) or an initramfs file."""
    found = read_image(target)
    entries = {e.path: describe(e, found.origins.get(e.path)) for e in found.entries}
    return Listing(found.source, entries, found.manifest)


def _link_data(entries: Iterable[Entry]) -> dict[tuple[int, int], bytes]:
    """The data of each hard-link group, whichever of its names carries it."""
    found: dict[tuple[int, int], bytes] = {}
    for e in entries:
        if e.nlink > 1 and stat.S_ISREG(e.mode) and e.size:
            found[(e.segment, e.ino)] = e.data or b""
    return found


def format_entry(facts: Mapping[str, Any]) -> str:
    """An `ls -l`-like line: type and mode, owner, size or device, path, target, origin."""
    letter = {"dir": "d", "file": "-", "symlink": "l", "char": "c", "block": "b", "fifo": "p"}
    mode = stat.filemode(int(facts["mode"], 8))[1:]
    kind = letter.get(facts["type"], "?")
    size = f"{facts['rdev'][0]},{facts['rdev'][1]}" if "rdev" in facts else str(
        facts.get("size", 0))
    line = f"{kind}{mode} {facts['uid']:>5}:{facts['gid']:<5} {size:>9}  {facts['path']}"
    if "target" in facts:
        line += f" -> {facts['target']}"
    if "origin" in facts:
        line += f"  [{facts['origin']}]"
    return line


METADATA = ("type", "mode", "uid", "gid", "rdev", "target")


@boundary
def diff(a: Listing, b: Listing) -> dict[str, list[dict[str, Any]]]:
    """Added, removed, changed content and changed metadata (mtimes are not compared)."""
    result: dict[str, list[dict[str, Any]]] = {
        "added": [], "removed": [], "content": [], "metadata": []}
    for path in sorted(set(a.entries) | set(b.entries)):
        old, new = a.entries.get(path), b.entries.get(path)
        if old is None and new is not None:
            result["added"].append(new)
        elif new is None and old is not None:
            result["removed"].append(old)
        elif old is not None and new is not None:
            if old.get("sha256") != new.get("sha256"):
                result["content"].append({"path": path, "old": old, "new": new})
            changes = {k: [old.get(k), new.get(k)] for k in METADATA if old.get(k) != new.get(k)}
            if changes:
                result["metadata"].append({"path": path, "changes": changes})
    return result


def format_diff(result: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[str]:
    lines = [f"+ {format_entry(e)}" for e in result["added"]]
    lines += [f"- {format_entry(e)}" for e in result["removed"]]
    for change in result["content"]:
        old, new = change["old"], change["new"]
        lines.append(f"~ {change['path']}: content {old.get('size', 0)} -> "
                     f"{new.get('size', 0)} bytes")
    for change in result["metadata"]:
        parts = ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in change["changes"].items())
        lines.append(f"~ {change['path']}: {parts}")
    return lines
