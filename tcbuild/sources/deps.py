"""Extension dependencies: `.dep` files read as tce-load reads them, and the load order they imply.

Everything here is pure: fetching the `.dep` files is the caller's business (see `fetch`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

KERNEL_TOKEN = "-KERNEL.tcz"
DEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.tcz$")


def parse_dep(text: bytes) -> tuple[str, ...]:
    """The names in a `.dep` file: all blanks removed, empty lines skipped, CRLF tolerated.

    tce-load deletes every space and tab of a line (`sed 's/[ \\t]//g'`); real files carry
    trailing blanks and lines holding a single space. It keeps CR, which only makes it fail later
    on a name that ends in CR, so a CR is dropped here too. Names are returned as written
    (`filesystems-KERNEL.tcz` included); see `substitute_kernel`.
    """
    names = []
    for line in text.decode("utf-8", "replace").split("\n"):
        name = re.sub(r"[ \t\r]", "", line)
        if name:
            names.append(name)
    return tuple(names)


def needs_kernel(name: str) -> bool:
    return name.endswith(KERNEL_TOKEN)


def substitute_kernel(name: str, kernel_version: str) -> str:
    """`filesystems-KERNEL.tcz` -> `filesystems-6.6.8-tinycore64.tcz`, as tce-load does."""
    if needs_kernel(name):
        return name[: -len(KERNEL_TOKEN)] + f"-{kernel_version}.tcz"
    return name


@dataclass(frozen=True)
class Resolution:
    """The dependency graph of a recipe's extensions and the order tce-load would load them."""

    roots: tuple[str, ...]
    graph: Mapping[str, tuple[str, ...]]
    order: tuple[str, ...] = field(init=False)
    cycles: tuple[tuple[str, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        order, cycles = load_order(self.roots, self.graph)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "cycles", cycles)

    def chain(self, name: str) -> tuple[str, ...]:
        """How the load reaches `name` from a root (for error messages)."""
        return chain_to(name, self.roots, self.graph)

    def as_json(self) -> dict[str, object]:
        """The resolution as JSON-ready data (`tcbuild deps --json`)."""
        return {"roots": list(self.roots),
                "graph": {name: list(deps) for name, deps in self.graph.items()},
                "order": list(self.order), "cycles": [list(cycle) for cycle in self.cycles]}


def load_order(
    roots: tuple[str, ...], graph: Mapping[str, tuple[str, ...]]
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Depth-first, dependencies before dependants, each name once, in `.dep` order.

    A cycle does not stop the load (tce-load only warns): the edge that closes it is skipped
    and the cycle is returned so the caller can warn.
    """
    order: list[str] = []
    done: set[str] = set()
    cycles: list[tuple[str, ...]] = []
    stack: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in stack:
            cycles.append((*stack[stack.index(name) :], name))
            return
        stack.append(name)
        for dep in graph.get(name, ()):
            visit(dep)
        stack.pop()
        done.add(name)
        order.append(name)

    for root in roots:
        visit(root)
    return tuple(order), tuple(cycles)


def chain_to(
    target: str, roots: tuple[str, ...], graph: Mapping[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """The path by which a depth-first load first reaches `target`; `(target,)` if none does."""
    seen: set[str] = set()

    def walk(name: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if name == target:
            return (*path, name)
        if name in seen:
            return None
        seen.add(name)
        for dep in graph.get(name, ()):
            if found := walk(dep, (*path, name)):
                return found
        return None

    for root in roots:
        if found := walk(root, ()):
            return found
    return (target,)


def render_tree(resolution: Resolution, labels: Mapping[str, str] | None = None) -> list[str]:
    """The graph as an indented tree; a subtree shown once, later mentions marked `(see above)`."""
    labels = labels or {}
    lines: list[str] = []
    shown: set[str] = set()

    def walk(name: str, prefix: str, last: bool, path: tuple[str, ...]) -> None:
        branch = "└── " if last else "├── "
        label = f" {labels[name]}" if name in labels else ""
        deps = resolution.graph.get(name, ())
        if name in path:
            lines.append(f"{prefix}{branch}{name} (cycle)")
            return
        if name in shown and deps:
            lines.append(f"{prefix}{branch}{name}{label} (see above)")
            return
        lines.append(f"{prefix}{branch}{name}{label}")
        shown.add(name)
        child_prefix = prefix + ("    " if last else "│   ")
        for i, dep in enumerate(deps):
            walk(dep, child_prefix, i == len(deps) - 1, (*path, name))

    for i, root in enumerate(resolution.roots):
        walk(root, "", i == len(resolution.roots) - 1, ())
    return lines
