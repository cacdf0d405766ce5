"""The image's dynamic loader: what an ELF object or a script asks for, and where glibc's
`ld.so` would find it among an image's paths (nothing is read from the disk).

An object's needs are read with pyelftools (pure Python, small, well kept; lief is a large
compiled library that parses everything): the ELF header, the program headers, the dynamic
section and the strings it names, nothing else, and pyelftools is imported only when an ELF file
is read. A library is looked for in `DT_RPATH` (when there is no `DT_RUNPATH`), `DT_RUNPATH`, the
directories of `/etc/ld.so.conf` and its includes (what `ldconfig` caches at boot), then `/lib`
and `/usr/lib`; `$ORIGIN`, `$LIB` and `$PLATFORM` are expanded, symlinks followed inside the
image, and a library of another ELF class or machine is skipped, as the loader skips it.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import posixpath
import re
import stat
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..formats.newc import Entry

ELF_MAGIC = b"\x7fELF"
MAX_LINKS = 40  # symlinks followed in one lookup before the kernel gives up (ELOOP)
DEFAULT_DIRS = ("lib", "usr/lib")
LD_SO_CONF = "etc/ld.so.conf"
LOADER_NAME = re.compile(r"^ld(-linux[\w.-]*|64|-musl-[\w.-]*)\.so(\.\d+)*$")

@dataclass(frozen=True, slots=True)
class Program:
    """What the loader needs of one file: an ELF object's interpreter, libraries and search
    paths (`abi`: its class and machine), or a script's interpreter line."""

    interpreter: str | None
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    abi: tuple[int, str] | None = None  # None: a script
    arguments: tuple[str, ...] = ()  # a script's `#!` words after the interpreter
    malformed: str = ""  # what is out of range in an ELF object no loader would map


@dataclass(frozen=True, slots=True)
class Node:
    """One path of the image as the check sees it."""

    origin: str
    kind: str  # "file", "dir", "symlink" or "other"
    target: str = ""  # a symlink's
    program: Program | None = None
    text: bytes | None = None  # kept for the loader's configuration only
    executable: bool = False  # a regular file with an x bit



# -- reading one file ---------------------------------------------------------------------------

def read_program(data: bytes) -> Program | None:
    """An ELF executable or shared object, or a script (`#!`); None for anything else."""
    if data.startswith(ELF_MAGIC):
        return _read_elf(data)
    if data.startswith(b"#!"):
        words = data[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
        if words:
            return Program(words[0], arguments=tuple(words[1:]))
    return None


ELF_CLASSES = {1: 32, 2: 64}  # e_ident[EI_CLASS]
ELF_ORDERS = {1: True, 2: False}  # e_ident[EI_DATA]: little-endian?
LOADED = ("ET_EXEC", "ET_DYN")  # what the loader maps (not a module or an object file)


@functools.cache
def _structs(little: bool, elfclass: int, *kind: str) -> Any:
    """pyelftools' layouts for one byte order, class (and type, machine and ABI), made once:
    making them is most of what opening a file with `ELFFile` costs."""
    from elftools.elf.structs import ELFStructs

    structs = ELFStructs(little_endian=little, elfclass=elfclass)
    structs.create_basic_structs()
    if kind:
        structs.create_advanced_structs(*kind)
    return structs


@functools.cache
def _dynamic(little: bool, elfclass: int, count: int) -> Any:
    """A dynamic section of `count` entries, its tags as numbers (no name lookup per entry)."""
    from elftools.construct import Array, Struct

    structs = _structs(little, elfclass)
    entry = Struct("Elf_Dyn", structs.Elf_sxword("d_tag"), structs.Elf_xword("d_val"))
    return Array(count, entry)


def _read_elf(data: bytes) -> Program | None:
    from elftools.common.exceptions import ELFError
    from elftools.common.utils import struct_parse
    from elftools.elf.enums import ENUM_D_TAG_COMMON as DT

    elfclass, little = ELF_CLASSES.get(data[4:5][0] if data[4:5] else 0), ELF_ORDERS.get(
        data[5:6][0] if data[5:6] else 0)
    if elfclass is None or little is None:
        return None
    stream = io.BytesIO(data)
    try:
        elf = struct_parse(_structs(little, elfclass).Elf_Ehdr, stream, stream_pos=0)
        if elf["e_type"] not in LOADED:
            return None  # a kernel module or an object file: no loader involved
        structs = _structs(little, elfclass, elf["e_type"], elf["e_machine"],
                           elf["e_ident"]["EI_OSABI"])
        abi = (elfclass, str(elf["e_machine"]))
        table = (elf["e_phoff"], elf["e_phnum"] * elf["e_phentsize"])
        if not _inside(data, *table):
            return Program(None, abi=abi, malformed=_outside("its program headers", *table,
                                                             data))
        headers = [struct_parse(structs.Elf_Phdr, stream,
                                stream_pos=elf["e_phoff"] + i * elf["e_phentsize"])
                   for i in range(elf["e_phnum"])]
        interpreter, tags = None, []
        for header in headers:
            if header["p_type"] not in ("PT_INTERP", "PT_DYNAMIC"):
                continue
            if not _inside(data, header["p_offset"], header["p_filesz"]):
                return Program(None, abi=abi, malformed=_outside(
                    f"its {header['p_type']} segment", header["p_offset"], header["p_filesz"],
                    data))
            if header["p_type"] == "PT_INTERP":
                interpreter = c_string(data, header["p_offset"])
            else:
                count = header["p_filesz"] // structs.Elf_Dyn.sizeof()
                entries = struct_parse(_dynamic(little, elfclass, count), stream,
                                       stream_pos=header["p_offset"])
                for entry in entries:
                    if entry["d_tag"] == DT["DT_NULL"]:
                        break
                    tags.append((entry["d_tag"], entry["d_val"]))
    except (ELFError, ValueError, IndexError):
        return None  # not an object the loader would map either
    strtab = next((value for tag, value in tags if tag == DT["DT_STRTAB"]), None)
    base = None if strtab is None else next(
        (strtab - h["p_vaddr"] + h["p_offset"] for h in headers if h["p_type"] == "PT_LOAD"
         and h["p_vaddr"] <= strtab < h["p_vaddr"] + h["p_filesz"]), None)
    if base is None:
        return Program(interpreter, abi=abi)

    def strings(kind: str) -> tuple[str, ...]:
        return tuple(c_string(data, base + value) for tag, value in tags if tag == DT[kind])

    def paths(kind: str) -> tuple[str, ...]:
        return tuple(p for value in strings(kind) for p in value.split(":"))

    return Program(interpreter, strings("DT_NEEDED"), paths("DT_RPATH"), paths("DT_RUNPATH"),
                   abi)


def _inside(data: bytes, offset: int, size: int) -> bool:
    """Whether `size` bytes at `offset` are all in the file."""
    return offset >= 0 and size >= 0 and offset + size <= len(data)


def _outside(what: str, offset: int, size: int, data: bytes) -> str:
    return (f"{what} ({size} bytes at offset {offset:#x}) lie outside the file ({len(data)} "
            "bytes)")


def c_string(data: bytes, offset: int) -> str:
    """The NUL-terminated string at `offset`."""
    end = data.find(b"\0", offset)
    return data[offset : end if end >= 0 else len(data)].decode("utf-8", "surrogateescape")


# -- the image as the loader sees it -------------------------------------------------------------

def node_of(entry: Entry, origin: str, known: Mapping[str, Program | None] | None = None
            ) -> Node:
    """An entry as the check needs it: its data read here, unless `known` has its program (read
    before from the same bytes). A script counts only when it is executable."""
    mode = entry.mode
    if stat.S_ISDIR(mode):
        return Node(origin, "dir")
    if stat.S_ISLNK(mode):
        return Node(origin, "symlink", (entry.data or b"").decode("utf-8", "surrogateescape"))
    if not stat.S_ISREG(mode):
        return Node(origin, "other")
    data = entry.data or b""
    text = data if entry.path.startswith(LD_SO_CONF) else None
    known = known or {}
    program = known[entry.path] if entry.path in known else read_program(data)
    if program is not None and program.abi is None and not mode & 0o111:
        program = None
    return Node(origin, "file", program=program, text=text, executable=bool(mode & 0o111))


class View:
    """Paths of the image, in layers (the first that has a path wins), looked up with symlinks
    followed the way the kernel follows them inside the image's root."""

    def __init__(self, *layers: Mapping[str, Node]) -> None:
        self.nodes: ChainMap[str, Node] = ChainMap(*layers)  # type: ignore[arg-type]
        self._files: dict[str, tuple[str, Node] | None] = {}

    def resolve(self, path: str) -> str | None:
        """The path with every symlink followed; None when something on the way is missing."""
        pending = [p for p in reversed(path.split("/")) if p not in ("", ".")]
        done: list[str] = []
        links = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = "/".join([*done, part])
            node = self.nodes.get(candidate)
            if node is None:
                return None
            if node.kind == "symlink":
                links += 1
                if links > MAX_LINKS:
                    return None
                if node.target.startswith("/"):
                    done = []
                pending += [p for p in reversed(node.target.split("/")) if p not in ("", ".")]
                continue
            if pending and node.kind != "dir":
                return None
            done.append(part)
        return "/".join(done) or "."

    def file(self, path: str) -> tuple[str, Node] | None:
        """The regular file `path` names (its resolved path and node), or None."""
        if path not in self._files:
            resolved = self.resolve(path)
            node = None if resolved is None else self.nodes.get(resolved)
            found = None if resolved is None or node is None or node.kind != "file" else (
                resolved, node)
            self._files[path] = found
        return self._files[path]


def library_dirs(view: View) -> tuple[str, ...]:
    """The directories of `/etc/ld.so.conf`, its `include`s followed (globs, once each)."""
    dirs: list[str] = []
    seen: set[str] = set()

    def read(path: str) -> None:
        found = view.file(path)
        if found is None or found[0] in seen:
            return
        seen.add(found[0])
        text = (found[1].text or b"").decode("utf-8", "replace")
        for line in text.splitlines():
            words = line.split("#", 1)[0].replace(",", " ").split()
            if words[:1] == ["include"]:
                for pattern in words[1:]:
                    pattern = pattern.lstrip("/")
                    if not posixpath.isabs("/" + pattern):
                        continue
                    for candidate in sorted(view.nodes):
                        if fnmatch.fnmatchcase(candidate, pattern):
                            read(candidate)
            else:
                dirs.extend(word.strip("/") for word in words if word.startswith("/"))

    read(LD_SO_CONF)
    return tuple(dict.fromkeys(dirs))


def _search_path(program: Program, path: str, conf: tuple[str, ...]) -> list[str]:
    origin = posixpath.dirname(path)
    lib = "lib64" if program.abi and program.abi[0] == 64 else "lib"
    platform = "x86_64" if program.abi and program.abi[1] == "EM_X86_64" else "i686"

    def expand(entries: tuple[str, ...]) -> list[str]:
        out = []
        for entry in entries:
            for name, value in (("ORIGIN", "/" + origin), ("LIB", lib),
                                ("PLATFORM", platform)):
                entry = entry.replace(f"${{{name}}}", value).replace(f"${name}", value)
            if entry.startswith("/"):  # a relative entry is relative to the working directory
                out.append(posixpath.normpath(entry).strip("/"))
        return out

    dirs = [] if program.runpath else expand(program.rpath)
    dirs += expand(program.runpath)
    dirs += conf
    dirs += DEFAULT_DIRS
    return [d for d in dict.fromkeys(dirs)]


def find_library(view: View, name: str, program: Program, path: str,
                 conf: tuple[str, ...]) -> str | None:
    """Where the loader finds `name` for the object at `path`; None when nowhere."""
    if "/" in name:
        found = view.file(name)
        return found[0] if found else None
    for directory in _search_path(program, path, conf):
        found = view.file(f"{directory}/{name}" if directory else name)
        if found is None:
            continue
        other = found[1].program
        if other is not None and other.abi is not None and other.abi != program.abi:
            continue  # the loader skips a library of another class or machine
        return found[0]
    return None
