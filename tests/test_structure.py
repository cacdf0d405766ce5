"""The package's shape: no import cycle among its modules, and `import tcbuild` stays light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import tcbuild

PACKAGE = Path(tcbuild.__file__).parent
HEAVY = ("pycdlib", "jinja2", "PySquashfsImage", "deflate", "libarchive", "tqdm", "elftools")


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its text (lazy imports too)."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    edges.add(node.module.split(".")[0])
                else:  # from . import a, b
                    edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tcbuild"):
                parts = (node.module or "").split(".")
                edges.add(parts[1] if len(parts) > 1 else "__init__")
            elif isinstance(node, ast.Import):
                edges.update(a.name.split(".")[1] for a in node.names
                             if a.name.startswith("tcbuild."))
        graph[path.stem] = {e for e in edges if e in modules} - {path.stem}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself again, with the path that does."""
    found = []
    for start in sorted(graph):
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    found.append([*path, start])
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert {"build", "fetch", "iso", "isoread", "pipeline"} <= set(graph)  # it read the package
    assert "fetch" in graph["build"] and "isoread" in graph["fetch"]  # and saw lazy imports
    assert cycles(graph) == []


def test_no_module_but_the_roof_imports_the_package_root() -> None:
    graph = import_graph()
    assert sorted(m for m, edges in graph.items() if "__init__" in edges) == []


def test_no_module_is_over_600_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})[0] == ["a", "b", "c", "a"]


def test_import_tcbuild_loads_no_heavy_dependency() -> None:
    code = ("import json, sys, tcbuild; tcbuild.BuildOptions; tcbuild.publish; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    assert {m for m in loaded_modules("import tcbuild") if m.startswith("tcbuild.")} == {
        "tcbuild.version"}  # each name loads its module on first use


def loaded_modules(code: str, *args: str | Path) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (which prints nothing)."""
    code += "; import json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                         text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_command_line_loads_a_command_s_modules_only_to_run_it() -> None:
    loaded = loaded_modules("import tcbuild.cli")
    assert {"tcbuild.cli", "tcbuild.cliargs"} <= loaded
    assert {f"tcbuild.{m}" for m in ("build", "fetch", "pipeline", "fleet", "doctor", "httptree",
                                      "tftp", "verify", "image")} & loaded == set()
    assert {m for m in loaded if m.split(".")[0] in (*HEAVY, "http")} == set()


def test_the_lazy_names_still_work() -> None:
    code = ("import sys, tcbuild; assert 'pycdlib' not in sys.modules; "
            "print(tcbuild.plan_iso.__module__, tcbuild.IsoPlan.__name__, "
            "'pycdlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["tcbuild.iso", "IsoPlan", "True"]
    assert set(tcbuild.__all__) <= set(dir(tcbuild))


def test_a_submodule_does_not_hide_the_function_of_its_name() -> None:
    code = ("import tcbuild, tcbuild.build, tcbuild.fetch; from tcbuild import verify; "
            "import tcbuild.verify; print(tcbuild.build.__module__, tcbuild.fetch.__module__, "
            "tcbuild.verify.__module__, verify.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["tcbuild.build", "tcbuild.fetch", "tcbuild.verify",
                                  "tcbuild.verify"]  # the functions, from their modules
    assert callable(tcbuild.build) and callable(tcbuild.fetch) and callable(tcbuild.verify)
