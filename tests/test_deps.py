"""Dependency resolution as tce-load does it, on hand-made graphs and a real 13.x tce directory."""

from __future__ import annotations

from pathlib import Path

from tcbuild.sources.deps import Resolution, parse_dep, render_tree, substitute_kernel

TCE13 = Path(__file__).parent / "data" / "tce13"


def test_parse_dep_quirks() -> None:
    text = b"rpcbind.tcz\r\n libtirpc.tcz \t\n\n \n\tfilesystems-KERNEL.tcz\t\nlast.tcz"
    assert parse_dep(text) == ("rpcbind.tcz", "libtirpc.tcz", "filesystems-KERNEL.tcz", "last.tcz")
    assert parse_dep(b"") == () and parse_dep(b" \n\r\n\t\n") == ()


def test_kernel_substitution() -> None:
    assert substitute_kernel("filesystems-KERNEL.tcz", "6.6.8-tinycore64") == (
        "filesystems-6.6.8-tinycore64.tcz")
    assert substitute_kernel("KERNEL-tools.tcz", "6.6.8") == "KERNEL-tools.tcz"
    assert substitute_kernel("dhcp.tcz", "6.6.8") == "dhcp.tcz"


def test_dependencies_first_each_once_in_dep_order() -> None:
    graph = {
        "app.tcz": ("gui.tcz", "net.tcz"),
        "gui.tcz": ("libc.tcz", "font.tcz"),
        "net.tcz": ("libc.tcz",),
        "libc.tcz": (),
        "font.tcz": ("libc.tcz",),
        "tool.tcz": ("net.tcz",),
    }
    resolution = Resolution(("app.tcz", "tool.tcz"), graph)
    assert resolution.order == ("libc.tcz", "font.tcz", "gui.tcz", "net.tcz", "app.tcz",
                                "tool.tcz")
    assert resolution.cycles == ()
    assert resolution.chain("font.tcz") == ("app.tcz", "gui.tcz", "font.tcz")


def test_cycle_is_tolerated_and_reported() -> None:
    graph = {"a.tcz": ("b.tcz",), "b.tcz": ("c.tcz", "a.tcz"), "c.tcz": (), "d.tcz": ("d.tcz",)}
    resolution = Resolution(("a.tcz", "d.tcz"), graph)
    assert resolution.order == ("c.tcz", "b.tcz", "a.tcz", "d.tcz")
    assert resolution.cycles == (("a.tcz", "b.tcz", "a.tcz"), ("d.tcz", "d.tcz"))


def test_order_is_deterministic_and_independent_of_dict_order() -> None:
    graph = {"a.tcz": ("x.tcz", "y.tcz"), "x.tcz": ("z.tcz",), "y.tcz": ("z.tcz",), "z.tcz": ()}
    reversed_graph = dict(reversed(list(graph.items())))
    assert Resolution(("a.tcz",), graph).order == Resolution(("a.tcz",), reversed_graph).order


def real_graph() -> dict[str, tuple[str, ...]]:
    """The 13.x graph; an extension without a .dep file has no dependencies."""
    graph: dict[str, tuple[str, ...]] = {}
    pending = [line.strip() for line in (TCE13 / "onboot.lst").read_text().splitlines()
               if line.strip()]
    while pending:
        name = pending.pop()
        if name in graph:
            continue
        dep = TCE13 / f"{name}.dep"
        graph[name] = parse_dep(dep.read_bytes()) if dep.exists() else ()
        pending.extend(graph[name])
    return graph


def test_real_tce_directory() -> None:
    roots = tuple(dict.fromkeys(
        line.strip() for line in (TCE13 / "onboot.lst").read_text().splitlines() if line.strip()))
    graph = real_graph()
    resolution = Resolution(roots, graph)
    order = resolution.order
    assert len(order) == len(set(order)) == len(graph)
    position = {name: i for i, name in enumerate(order)}
    for name, deps in graph.items():
        for dep in deps:
            assert position[dep] < position[name], (dep, name)
    # the quirky lines of real files ("expat2.tcz\n \n", a blank line) add no phantom names
    assert "" not in graph and all(" " not in n for n in graph)
    assert parse_dep((TCE13 / "dbus.tcz.dep").read_bytes()) == ("expat2.tcz",)


def test_render_tree_marks_repeats() -> None:
    graph = {"a.tcz": ("b.tcz", "c.tcz"), "b.tcz": ("c.tcz",), "c.tcz": ("d.tcz",), "d.tcz": ()}
    lines = render_tree(Resolution(("a.tcz",), graph), {"a.tcz": "(local)"})
    assert lines == [
        "└── a.tcz (local)",
        "    ├── b.tcz",
        "    │   └── c.tcz",
        "    │       └── d.tcz",
        "    └── c.tcz (see above)",
    ]
