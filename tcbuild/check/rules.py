"""Will it run? An image checked before any node boots it: libraries, interpreters, the kernel.

Pure: the image's entries (with their data and where each came from), the kernel's bytes and the
mirror's `provides.db` in, findings out; nothing is read from or written to the disk.
- Every ELF executable and shared object: its `PT_INTERP` is a file of the image, and each
  `DT_NEEDED` resolves as glibc's loader would resolve it there (`loader.py`).
- Every executable script: its `#!` interpreter is there (and `env`'s program on the `PATH`).
- What `/opt/bootlocal.sh` and the overlay's shell templates run by absolute path (`scripts.py`)
  is a file of the image, and executable (what they source with `.` is there).
- The kernel (its version read from the bzImage header), `lib/modules/<version>/` and the
  kernel extensions (`filesystems-6.6.8-tinycore64`) are of one version.
- Onboot extensions (`/tmp/builtin/optional`) are checked as tce-load leaves them: mounted at
  `/tmp/tcloop/<name>`, each file linked into `/` unless something is there; a `.tcz`'s files
  may use only the base and that `.tcz`'s own dependency closure (its `.dep` files).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..formats.newc import Entry
from .loader import LOADER_NAME, Node, Program, View, c_string, find_library, library_dirs, node_of
from .scripts import BOOT_SCRIPTS, TEMPLATE_ORIGIN, is_shell, runs

PATH_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")
ONBOOT = "tmp/builtin/optional"
ONBOOT_LIST = "tmp/builtin/onboot.lst"
TCLOOP = "tmp/tcloop"
INSTALLED = "usr/local/tce.installed"
KERNEL_EXTENSION = re.compile(r"-(\d+\.\d+(?:\.\d+)*-tinycore\w*)\.tcz$")
MODULES = re.compile(r"^(?:usr/local/)?lib/modules/([^/]+)$")
HEADER_MAGIC = b"HdrS"  # a bzImage's setup header (the x86 boot protocol)


@dataclass(frozen=True)
class Finding:
    """One problem: the file, where it came from, what it lacks, who on the mirror has it."""

    path: str
    origin: str
    problem: str
    missing: str
    providers: tuple[str, ...] = ()
    hint: str = ""

    def line(self) -> str:
        hint = self.hint
        if not hint and self.providers:
            names = " or ".join(f"`{name}`" for name in self.providers)
            hint = f"add {names} to extensions.install"
        where = f" [{self.origin}]" if self.origin else ""  # no build.json: origins unknown
        return f"/{self.path}{where}: {self.problem}" + (f" ({hint})" if hint else "")

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "origin": self.origin, "problem": self.problem,
                "missing": self.missing, "providers": list(self.providers), "hint": self.hint,
                "message": self.line()}


# -- the kernel, and the mirror's provides.db ----------------------------------------------------

def kernel_version(data: bytes) -> str | None:
    """The version a bzImage announces in its setup header; None for anything else."""
    if len(data) < 0x210 or data[0x202:0x206] != HEADER_MAGIC:
        return None
    pointer = int.from_bytes(data[0x20E:0x210], "little")
    if not pointer:
        return None
    start = pointer + 0x200
    words = c_string(data, start)[:256].split() if start < len(data) else []
    return words[0] if words else None


def parse_provides(text: bytes) -> dict[str, tuple[str, ...]]:
    """`provides.db`: records separated by a blank line, an extension's name then its files.

    Returns each file (no leading `/`), each base name (`*/libz.so.1`) and each program on the
    `PATH` (`*bin/bash`) -> the extensions that have it.
    """
    found: dict[str, set[str]] = {}
    for record in re.split(rb"\n\s*\n", text.replace(b"\r\n", b"\n")):
        lines = [line.strip() for line in record.decode("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            continue
        name = lines[0].removesuffix(".tcz")
        for path in lines[1:]:
            path = path.strip("/")
            directory, _, base = path.rpartition("/")
            keys = {path, f"*/{base}"} | ({f"*bin/{base}"} if directory in PATH_DIRS else set())
            for key in keys:
                found.setdefault(key, set()).add(name)
    return {key: tuple(sorted(names)) for key, names in found.items()}


# -- the check -----------------------------------------------------------------------------------

@dataclass
class _Checker:
    """Findings collected, each with the extensions the mirror has the missing file in."""

    provides: Mapping[str, tuple[str, ...]]
    installed: set[str]
    findings: list[Finding] = field(default_factory=list)

    def report(self, path: str, origin: str, problem: str, missing: str, program: bool,
               hint: str = "") -> None:
        providers = () if hint else self.providers(missing, program)
        fresh = tuple(p for p in providers if p not in self.installed)
        if providers and not fresh:
            hint = (f"`{providers[0]}` has it and is in the image, but not where it is looked "
                    "for")
        self.findings.append(Finding(path, origin, problem, missing, fresh, hint))

    def providers(self, missing: str, program: bool) -> tuple[str, ...]:
        exact = self.provides.get(missing.strip("/"))
        if exact:
            return exact[:3]
        kind = "*bin" if program else "*"
        return self.provides.get(f"{kind}/{posixpath.basename(missing)}", ())[:3]

    def program(self, view: View, conf: tuple[str, ...], path: str, node: Node,
                shown: str | None = None, image: tuple[View, tuple[str, ...]] | None = None
                ) -> None:
        """Check one executable, shared object or script found at `path` (reported as
        `shown`); an onboot extension's is checked in its closure, with the whole `image`."""
        program = node.program
        assert program is not None
        shown = shown or path
        if program.abi is None:
            self.script(view, shown, node.origin, program)
            return
        if program.malformed:
            self.findings.append(Finding(shown, node.origin, f"a malformed ELF object: "
                                         f"{program.malformed}; no loader would map it", "",
                                         hint="replace the file"))
            return
        if program.interpreter and view.file(program.interpreter) is None:
            found = image[0].file(program.interpreter) if image else None
            self.report(shown, node.origin, f"its loader {program.interpreter} (PT_INTERP) is "
                        "not in the image", program.interpreter, True, _elsewhere(found, node))
        for name in program.needed:
            if LOADER_NAME.match(name):
                continue  # the dynamic loader: loaded first, as some executable's PT_INTERP
            if find_library(view, name, program, path, conf) is None:
                where = find_library(image[0], name, program, path, image[1]) if image else None
                found = image[0].file(where) if image and where else None
                self.report(shown, node.origin, f"needs {name}, which the loader does not "
                            "find in the image", name, False, _elsewhere(found, node))

    def script(self, view: View, path: str, origin: str, program: Program) -> None:
        interpreter = program.interpreter or ""
        if not interpreter.startswith("/"):
            return
        if view.file(interpreter) is None:
            self.report(path, origin, f"its interpreter {interpreter} (#!) is not in the image",
                        interpreter, True)
        elif posixpath.basename(interpreter) == "env" and program.arguments:
            name = next((a for a in program.arguments if not a.startswith("-")), None)
            if name and "=" not in name and not any(
                    view.file(f"{d}/{name}") for d in PATH_DIRS):
                self.report(path, origin, f"its interpreter {name} (#!{interpreter}) is not on "
                            "the PATH of the image", f"usr/local/bin/{name}", True)


    def runner(self, view: View, path: str, origin: str, text: str) -> None:
        """What a boot script or template runs by absolute path: there, and executable."""
        for run in runs(text):
            found = view.file(run.path)
            what = f"{'sources' if run.sourced else 'runs'} /{run.path} (line {run.line})"
            if found is None:
                self.report(path, origin, f"{what}, which is not in the image", run.path, True)
            elif not run.sourced and not found[1].executable:
                self.report(path, origin, f"{what}, which is not executable", run.path, True,
                            f"give /{found[0]} a mode with x bits")


def _elsewhere(found: tuple[str, Node] | None, node: Node) -> str:
    """The hint for an onboot extension's need another extension of the image meets."""
    if found is None or not found[1].origin.startswith("extension:"):
        return ""
    other, name = found[1].origin.removeprefix("extension:"), node.origin.partition(":")[2]
    return f"{other} has it, but {name} does not depend on it: add it to {name}.dep"


def check_image(entries: Iterable[tuple[Entry, str]], *, kernel: bytes | None = None,
                kernel_name: str = "vmlinuz64",
                provides: Mapping[str, tuple[str, ...]] | None = None,
                ignore: Iterable[str] = (),
                read_tcz: Callable[[bytes, str], Iterable[Entry]] | None = None,
                known: Mapping[str, Program | None] | None = None) -> list[Finding]:
    """Every finding of an image: its entries (data included) with their origins.

    `read_tcz` reads an onboot extension's entries from its bytes (and a label for errors);
    without it, the `.tcz` files of `/tmp/builtin/optional` are not looked into. `known` has
    the programs of paths read before (`read_program`): their data is not needed.
    """
    base: dict[str, Node] = {}
    raw: dict[str, bytes] = {}  # what tce-setup reads: onboot.lst, the .tcz and .dep files
    scripts: list[tuple[str, str, str]] = []  # boot scripts and shell templates: their text
    for entry, origin in entries:
        path = entry.path
        base[path] = node_of(entry, origin, known)
        if path == ONBOOT_LIST or path.startswith(f"{ONBOOT}/"):
            raw[path] = entry.data or b""
        if entry.data and (path in BOOT_SCRIPTS or TEMPLATE_ORIGIN.fullmatch(origin)):
            text = entry.data.decode("utf-8", "replace")
            if is_shell(path, text):
                scripts.append((path, origin, text))
    onboot = {} if read_tcz is None else _onboot(raw, read_tcz)
    checker = _Checker(provides or {}, _installed(base, onboot))
    everything = View(_mounted(base, list(onboot), onboot), base)
    conf = library_dirs(everything)
    for path, node in base.items():
        if node.program is not None:
            checker.program(everything, conf, path, node)
    for path, origin, text in scripts:
        checker.runner(everything, path, origin, text)
    for name, (nodes, closure) in onboot.items():
        stem = name.removesuffix(".tcz")
        view = View(_mounted(base, closure, onboot), base)
        own = library_dirs(view)
        for path, node in nodes.items():
            if node.program is not None:
                checker.program(view, own, f"{TCLOOP}/{stem}/{path}", node, path,
                                (everything, conf))
    checker.findings += _kernel(everything, kernel, kernel_name, checker.installed)
    patterns = [pattern.strip("/") for pattern in ignore]  # deliberate: the recipe says so
    return [f for f in checker.findings
            if not any(fnmatch.fnmatchcase(f.path, pattern) for pattern in patterns)]


Onboot = dict[str, tuple[dict[str, Node], list[str]]]  # name -> (its nodes, its closure)


def _onboot(raw: Mapping[str, bytes],
            read_tcz: Callable[[bytes, str], Iterable[Entry]]) -> Onboot:
    """The onboot extensions in `onboot.lst` order, each with its dependency closure (.dep)."""
    deps = {path.removeprefix(f"{ONBOOT}/").removesuffix(".dep"): _lines(data)
            for path, data in raw.items() if path.endswith(".tcz.dep")}
    onboot: Onboot = {}
    for name in _lines(raw.get(ONBOOT_LIST, b"")):
        data = raw.get(f"{ONBOOT}/{name}")
        if data is None or name in onboot:
            continue
        origin = f"extension:{name}"
        nodes = {entry.path: node_of(entry, origin) for entry in read_tcz(data, name)}
        onboot[name] = nodes, _closure(name, deps)
    return onboot


def _lines(data: bytes) -> list[str]:
    return [line.strip() for line in data.decode("utf-8", "replace").splitlines()
            if line.strip()]


def _closure(name: str, deps: Mapping[str, list[str]]) -> list[str]:
    """`name` and everything its `.dep` files name, dependencies first."""
    order: list[str] = []

    def visit(current: str, path: tuple[str, ...]) -> None:
        if current in order or current in path:
            return
        for dep in deps.get(current, []):
            visit(dep, (*path, current))
        order.append(current)

    visit(name, ())
    return order


def _mounted(base: Mapping[str, Node], names: Iterable[str], onboot: Onboot) -> dict[str, Node]:
    """What tce-load leaves for extensions: each mounted at /tmp/tcloop/<name>, its directories
    made and its other files linked into `/` where nothing is (tce-load never overwrites)."""
    layer: dict[str, Node] = {}
    for name in names:
        if name not in onboot:
            continue
        stem = name.removesuffix(".tcz")
        origin = f"extension:{name}"
        mount = f"{TCLOOP}/{stem}"
        for directory in (TCLOOP, mount):
            layer.setdefault(directory, Node(origin, "dir"))
        for path, node in onboot[name][0].items():
            layer[f"{mount}/{path}"] = node
            if path in base or path in layer:
                continue
            link = Node(origin, "symlink", f"/{mount}/{path}")
            layer[path] = node if node.kind == "dir" else link
    return layer


def _installed(base: Mapping[str, Node], onboot: Onboot) -> set[str]:
    """The extensions in the image (unpacked ones leave a tce.installed marker), no `.tcz`."""
    names = {path.rpartition("/")[2] for path in base
             if path.startswith(f"{INSTALLED}/")}
    return names | {name.removesuffix(".tcz") for name in onboot}


def _kernel(view: View, kernel: bytes | None, kernel_name: str,
            installed: set[str]) -> Iterator[Finding]:
    """The kernel, its modules' directories and the kernel extensions: one version."""
    version = None if kernel is None else kernel_version(kernel)
    modules = {}
    for path in view.nodes:
        match = MODULES.match(path)
        if match and view.nodes[path].kind == "dir":
            modules[path] = match[1]
    if version is None:  # no kernel, or not a bzImage: the base's modules are the reference
        versions = sorted({v for p, v in modules.items() if not p.startswith("usr/")})
        if len(versions) != 1:
            return
        version, source = versions[0], "lib/modules/"
    else:
        source = kernel_name
    for path, found in sorted(modules.items()):
        if found != version:
            yield Finding(path, view.nodes[path].origin, f"modules for kernel {found}, but "
                          f"{source} is {version}", version)
    for name in sorted(installed):
        match = KERNEL_EXTENSION.search(f"{name}.tcz")
        if match and match[1] != version:
            yield Finding(f"{INSTALLED}/{name}", "extension:" + name + ".tcz",
                          f"{name}.tcz is for kernel {match[1]}, but {source} is {version}",
                          version, hint=f"use {name.replace(match[1], 'KERNEL')} in the recipe")
