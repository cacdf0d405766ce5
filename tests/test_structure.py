"""The package's shape, stated as rules that can fail: its folders by concern, no import cycle,
nothing imported upward, the leaves standing alone, and `import tcbuild` staying light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tcbuild

PACKAGE = Path(tcbuild.__file__).parent
HEAVY = ("pycdlib", "jinja2", "PySquashfsImage", "deflate", "libarchive", "tqdm", "elftools",
         "prometheus_client")

LEAVES = {"errors", "version", "atomic", "progress"}
"""Top-level modules that import nothing of the package."""
BUILD_SIDE = {"sources", "image", "check"}
SERVING_SIDE = {"boot", "tftproot", "bootserver", "fleet"}
MAY_IMPORT = {  # folder -> the folders (besides itself and the leaves) its modules may import
    "formats": set(),
    "config": {"formats"},
    "sources": {"formats", "config"},
    "image": {"formats", "config", "sources"},
    "check": {"formats", "config", "sources", "image"},
    "boot": {"formats", "config"},
    "tftproot": {"formats", "config", "boot"},
    "bootserver": {"formats", "config", "boot"},
    "fleet": {"formats", "config", "boot", "tftproot", "bootserver"},
    "stages": {"formats", "config", *BUILD_SIDE, *SERVING_SIDE},
    "cli": {"formats", "config", *BUILD_SIDE, *SERVING_SIDE, "stages"},
}
MAX_LINES = 500


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """`formats/newc.py` -> `formats.newc`; `cli/__init__.py` -> `cli`; `__init__.py` -> ``."""
    parts = list(path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its text (lazy imports too), with
    relative imports of every level resolved. `from .x import y` counts `x.y` when that is a
    module, else `x`; the package root is ``."""
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    top = package.name
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        here = name.split(".") if name else []
        if path.name != "__init__.py":
            here = here[:-1]  # a module's package
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                    target = [*base, *(node.module.split(".") if node.module else [])]
                elif (node.module or "").split(".")[0] == top:
                    target = (node.module or "").split(".")[1:]
                else:
                    continue
                for alias in node.names:
                    full = ".".join([*target, alias.name])
                    edges.add(full if full in paths else ".".join(target))
            elif isinstance(node, ast.Import):
                edges.update(".".join(a.name.split(".")[1:]) for a in node.names
                             if a.name.split(".")[0] == top)
        graph[name] = {e for e in edges if e in paths} - {name}
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


def folder(module: str) -> str:
    """The folder a module lives in (`formats.newc` -> `formats`), or the module if top-level."""
    return module.split(".")[0]


def broken_rules(graph: dict[str, set[str]]) -> list[str]:
    """Every import the plan does not allow, one line each."""
    problems = []
    for module, edges in sorted(graph.items()):
        for target in sorted(edges):
            where, to = folder(module), folder(target)
            if module in ("", "__main__") or where == to or to in LEAVES:
                continue  # the root and `python -m` may import anything
            if target == "":
                problems.append(f"{module} imports the package root")
            elif module in LEAVES:
                problems.append(f"{module} is a leaf and imports {target}")
            elif to not in MAY_IMPORT.get(where, set()):
                problems.append(f"{module} ({where}/) may not import {target} ({to}/)")
    return problems


def test_the_package_reads_its_subpackages() -> None:
    graph = import_graph()
    assert {"stages.build", "sources.fetch", "boot.iso", "sources.isoread", "cli.commands"
            } <= set(graph)
    assert "sources.fetch" in graph["stages.build"]  # absolute-form resolution
    assert "sources.isoread" in graph["sources.fetch"]  # a lazy import inside a function
    assert "boot.iso" in graph["stages.iso"]  # `from ..boot import iso`: the module, not boot


def test_the_top_level_holds_only_the_leaves_and_folders() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == LEAVES
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(MAY_IMPORT)


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_every_import_follows_the_plan() -> None:
    assert broken_rules(import_graph()) == []


def test_the_build_side_never_imports_the_serving_side() -> None:
    graph = import_graph()
    crossing = sorted(f"{m} -> {t}" for m, edges in graph.items() for t in edges
                      if folder(m) in BUILD_SIDE and folder(t) in SERVING_SIDE)
    assert crossing == []


def test_only_the_cli_imports_argparse() -> None:
    users = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "argparse" for n in names):
                users.add(module_name(path))
    assert users and {folder(m) for m in users} == {"cli"}


def test_no_module_is_over_500_lines() -> None:
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})[0] == ["a", "b", "c", "a"]


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "tcbuild"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    for sub in {p.parent for p in package.rglob("*.py")}:
        (sub / "__init__.py").touch()
    return package


@pytest.mark.parametrize(("files", "expected"), [
    ({"formats/newc.py": "from ..config import recipe\n", "config/recipe.py": ""},
     ["formats.newc (formats/) may not import config.recipe (config/)"]),
    ({"errors.py": "from .formats import newc\n", "formats/newc.py": ""},
     ["errors is a leaf and imports formats.newc"]),
    ({"sources/fetch.py": "def f():\n    from tcbuild.boot.iso import x\n", "boot/iso.py": ""},
     ["sources.fetch (sources/) may not import boot.iso (boot/)"]),
    ({"image/compose.py": "from .. import version\n", "version.py": ""}, []),
    ({"image/compose.py": "from .. import load_recipe\n"},
     ["image.compose imports the package root"]),
])
def test_the_rules_catch_an_upward_import(tmp_path: Path, files: dict[str, str],
                                          expected: list[str]) -> None:
    assert broken_rules(import_graph(write_package(tmp_path, files))) == expected


def test_the_rules_catch_a_deliberate_cycle(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "boot/pxelinux.py": "from .ipxe import twin\n",
        "boot/ipxe.py": "def twin():\n    from . import pxelinux\n"})
    assert cycles(import_graph(package)) == [["boot.ipxe", "boot.pxelinux", "boot.ipxe"],
                                             ["boot.pxelinux", "boot.ipxe", "boot.pxelinux"]]


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
    loaded = loaded_modules("import tcbuild.cli.commands")
    assert {"tcbuild.cli.commands", "tcbuild.cli.grammar"} <= loaded
    assert {f"tcbuild.{m}" for m in ("stages.build", "sources.fetch", "stages.publish",
                                      "fleet.view", "cli.doctor", "fleet.httptree", "fleet.power",
                                      "tftproot.releases", "tftproot.verify", "image.compose",
                                      "fleet.web", "fleet.follow", "fleet.metrics", "fleet.page")
            } & loaded == set()
    assert {m for m in loaded if m.split(".")[0] in (*HEAVY, "http", "wsgiref")} == set()


def test_fleet_loads_no_server_and_serve_loads_prometheus_only_when_asked() -> None:
    """`fleet` (no --serve) loads no HTTP server; the server's app loads prometheus_client only
    for /metrics."""
    fleet = loaded_modules("from tcbuild.fleet import overview")
    assert {"wsgiref.simple_server", "prometheus_client", "tcbuild.fleet.web"} & fleet == set()
    app = loaded_modules("from tcbuild.fleet import web")
    assert "wsgiref.simple_server" in app and "prometheus_client" not in app


def test_the_lazy_names_still_work() -> None:
    code = ("import sys, tcbuild; assert 'pycdlib' not in sys.modules; "
            "print(tcbuild.plan_iso.__module__, tcbuild.IsoPlan.__name__, "
            "'pycdlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["tcbuild.boot.iso", "IsoPlan", "True"]
    assert set(tcbuild.__all__) <= set(dir(tcbuild))


def test_the_paths_the_docs_import_still_work() -> None:
    code = ("import tcbuild, tcbuild.stages.build; from tcbuild import fleet, verify; "
            "print(tcbuild.build.__module__, verify.__module__, fleet.survey.__module__, "
            "fleet.State.CURRENT)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["tcbuild.stages.build", "tcbuild.tftproot.verify",
                                  "tcbuild.fleet.overview", "current"]
    assert callable(tcbuild.build) and callable(tcbuild.fetch) and callable(tcbuild.verify)
