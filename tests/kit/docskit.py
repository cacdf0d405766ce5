"""The docs, run: every command and file they show is checked against what tcbuild does now.

A doc (README.md, docs/*.md) is read as a script, top to bottom, in a site of its own: a copy of
the repository's recipes, overlays and examples, served by the stand-in mirror.
- A ```console block holds `$ COMMAND` lines, each followed by the output it prints
  (stdout and stderr together). `tcbuild` runs as `python -m tcbuild`; other commands
  (`cat`, `rm`) run as they are, without a shell. A `...` line in the output stands for any
  number of lines.
- A ```python block runs in the site, after the doc's Python blocks before it.
- A block right after `<!-- file: PATH -->` is PATH of the repository, in full.
- The first command or Python block that names `/var/log/remote` finds there the files the boot
  server's rsyslog would have written for the example's nodes (`node_logs`).
- A ```toml block without that is a fragment: it must parse.
What differs between runs is compared by its place, not its value: release and build ids,
sha256 sums and times become <release1>, <build2>, ... in order of appearance (on each side);
durations, KiB/MiB sizes and entry counts become N, and gaps between columns two blanks. The
names a doc shows for the site's places
(`/tftpboot`, `/var/log/remote`, `/srv/tcbuild`, the mirror `http://127.0.0.1:8000/`) stand for
the site's own.

    python -m tests.kit.docskit [DOC...]   # run the docs; with --update, write the outputs seen
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MIRROR = "http://127.0.0.1:8000/"
FENCE = re.compile(r"^```(\w*)\s*$")
FILE_MARK = re.compile(r"^<!-- file: (\S+) -->$")
ELLIPSIS = "..."
IDS = re.compile(r"(?P<release>\b\d{8}T\d{6}Z-[0-9a-f]{12}(?:\.\d+)?\b)"
                 r"|(?P<sha>\b[0-9a-f]{64}\b)|(?P<build>\b[0-9a-f]{12}\b)"
                 r"|(?P<time>\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?)")
FUZZY = [(re.compile(r"\b\d+(?:\.\d+)? s\b"), "N s"),
         (re.compile(r"\b\d+(?:\.\d+)? (KiB|MiB)\b"), r"N \1"),
         (re.compile(r"\b\d+ entries\b"), "N entries"),
         (re.compile(r"\b\d+ -> \d+ bytes\b"), "N -> N bytes"),
         # Columns padded to a varying value (a release id with a .2) shift: any gap is one.
         (re.compile(r"(?<=\S)  +(?=\S)"), "  ")]


@dataclass
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    lines: list[str]
    file: str | None = None  # shown in full

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


@dataclass
class Step:
    command: str
    expected: list[str]
    line: int  # of the command


def blocks(doc: Path) -> list[Block]:
    found: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise AssertionError(f"{doc}:{i + 1}: unclosed code block")
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        mark = FILE_MARK.match(previous)
        found.append(Block(doc, i + 1, fence[1], lines[i + 1:end], mark[1] if mark else None))
        i = end + 1
    return found


def steps(block: Block) -> list[Step]:
    result: list[Step] = []
    for n, line in enumerate(block.lines):
        if line.startswith("$ "):
            result.append(Step(line[2:], [], block.line + 1 + n))
        elif result:
            result[-1].expected.append(line.rstrip())
        elif line.strip():
            raise AssertionError(f"{block.where}: output before any `$ ` command")
    return result


@dataclass
class Ids:
    """Varying values named by kind and order of first appearance: <release1>, <build2>, ..."""

    names: dict[str, str] = field(default_factory=dict)

    def name(self, kind: str, value: str) -> str:
        if value not in self.names:
            count = sum(1 for n in self.names.values() if n.startswith(f"<{kind}"))
            self.names[value] = f"<{kind}{count + 1}>"
        return self.names[value]

    def normalize(self, text: str) -> str:
        text = IDS.sub(lambda m: self.name(str(m.lastgroup), m[0]), text)
        for pattern, replacement in FUZZY:
            text = pattern.sub(replacement, text)
        return text

    def value(self, name: str) -> str | None:
        return next((v for v, n in self.names.items() if n == name), None)


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line for line, a `...` line matching any number of lines."""
    if not expected:
        return not actual
    if expected[0] == ELLIPSIS:
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


@dataclass
class Site:
    """A doc's working directory and the names the doc shows for its places."""

    root: Path
    mirror: str
    doc_ids: Ids = field(default_factory=Ids)
    real_ids: Ids = field(default_factory=Ids)
    hooks: dict[str, Callable[[Site], None]] = field(default_factory=dict)  # place -> setup

    @property
    def places(self) -> list[tuple[str, str]]:
        """(as the doc shows it, as it is here), the longest first."""
        return [("/var/log/remote", str(self.root / "remote")),
                ("/tftpboot", str(self.root / "tftpboot")),
                ("/srv/tcbuild", str(self.root)), (MIRROR, self.mirror)]

    def to_real(self, command: str) -> str:
        for doc_value, name in list(self.doc_ids.names.items()):
            real = self.real_ids.value(name)
            if real is not None and doc_value in command:
                command = command.replace(doc_value, real)
        for shown, real in self.places:
            command = command.replace(shown, real)
        return command

    def to_doc(self, output: str) -> str:
        for shown, real in self.places:
            output = output.replace(real, shown)
        return output

    def set_up(self, text: str) -> None:
        """The places `text` names that are not there yet (a command, a Python block)."""
        for place in [p for p in self.hooks if p in text]:
            self.hooks.pop(place)(self)

    def run(self, command: str) -> list[str]:
        self.set_up(command)
        argv = shlex.split(self.to_real(command))
        if argv[0] == "tcbuild":
            argv = [sys.executable, "-m", "tcbuild", *argv[1:]]
        env = {**os.environ, "XDG_CACHE_HOME": str(self.root / ".cache"), "COLUMNS": "100",
               "PYTHONPATH": str(ROOT), "LC_ALL": "C.UTF-8"}
        done = subprocess.run(argv, cwd=self.root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300, env=env)
        return [line.rstrip() for line in self.to_doc(done.stdout).splitlines()]


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    # Every command: line -> the command as run, what it printed (ids are the run's own).
    seen: dict[int, tuple[str, list[str]]] = field(default_factory=dict)


def check(doc: Path, site: Site) -> Outcome:
    """Run a doc in `site`; every difference from what it shows, one message each."""
    outcome = Outcome()
    python: list[str] = []  # the doc's Python so far: each block continues the ones before
    for block in blocks(doc):
        if block.file is not None:
            shown = "\n".join(block.lines) + "\n"
            if (ROOT / block.file).read_text() != shown:
                outcome.problems.append(f"{block.where}: differs from {block.file}")
        elif block.lang == "console":
            for step in steps(block):
                actual = site.run(step.command)
                outcome.seen[step.line] = (site.to_doc(site.to_real(step.command)), actual)
                expected = [site.doc_ids.normalize(line) for line in step.expected]
                got = [site.real_ids.normalize(line) for line in actual]
                if not matches(expected, got):
                    outcome.problems.append(
                        f"{doc.relative_to(ROOT)}:{step.line}: `{step.command}` printed:\n"
                        + "\n".join(actual))
        elif block.lang == "python":
            site.set_up("\n".join(block.lines))
            python.append(site.to_real("\n".join(block.lines)))
            done = subprocess.run([sys.executable, "-c", "\n".join(python)], cwd=site.root,
                                  text=True,
                                  capture_output=True, timeout=300,
                                  env={**os.environ, "XDG_CACHE_HOME": str(site.root / ".cache"),
                                       "PYTHONPATH": str(ROOT)})
            if done.returncode != 0:
                outcome.problems.append(f"{block.where}: the Python failed:\n{done.stderr}")
        elif block.lang == "toml":
            outcome.problems += _toml_problems(block, site)
    return outcome


def _toml_problems(block: Block, site: Site) -> list[str]:
    """A fragment must parse; one with a [tinycore] table is a recipe tcbuild loads."""
    from tcbuild.config.recipefile import load_recipe
    from tcbuild.errors import TcbuildError

    text = "\n".join(block.lines) + "\n"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [f"{block.where}: not TOML: {e}"]
    if "tinycore" not in data:
        return []
    recipe = site.root / "recipes" / f"doc-{block.line}.toml"
    recipe.write_text(text)
    try:
        load_recipe(recipe)
    except TcbuildError as e:
        return [f"{block.where}: not a recipe tcbuild loads: {e}"]
    finally:
        recipe.unlink()
    return []


def node_logs(site: Site) -> None:
    """The log host's files (/var/log/remote), as the generated rsyslog rules write them.

    server1 booted the newest release of the site's TFTP root, server2 the oldest and its game
    server logged an error, each soon after its release was published.
    """
    from tcbuild.tftproot.releases import releases

    found = releases(site.root / "tftpboot")
    assert found, "the doc names /var/log/remote before it has published anything"
    logs = site.root / "remote"
    logs.mkdir(exist_ok=True)
    # Times apart by more than any publish takes: no two lines share one (see Ids).
    for name, ip, release, after, uptime in [("server1", "10.1.1.5", found[-1], 120, "38.52"),
                                             ("server2", "10.1.1.6", found[0], 30, "41.07")]:
        at = release.time.replace(microsecond=0) + timedelta(seconds=after)
        build = release.build_id[:12]
        (logs / f"{name}.log").write_text(
            f"{at.isoformat()} {ip} bootlocal: game-server node, build {build}, release "
            f"{release.id}, kernel 6.6.8-tinycore64, uptime={uptime}\n"
            f"{(at + timedelta(seconds=9)).isoformat()} {ip} bootlocal: starting "
            "/mnt/gameserver/master as tc (stdout local0.info, stderr local0.err, tag master)\n")
        if name == "server2":
            (logs / "server2-err.log").write_text(
                f"{(at + timedelta(seconds=17)).isoformat()} {ip} master: map not found: "
                "de_dust\n")


HOOKS: dict[str, Callable[[Site], None]] = {"/var/log/remote": node_logs}


def prepare(root: Path, mirror: str) -> Site:
    """A site in `root`: the repository's recipes, overlays and examples, and empty places."""
    for name in ("recipes", "overlays", "examples", "docs"):
        shutil.copytree(ROOT / name, root / name)
    (root / "tftpboot").mkdir()
    return Site(root, mirror, hooks=dict(HOOKS))


def update(doc: Path, outcome: Outcome) -> None:
    """Write one run's commands and outputs into the doc, so that its ids agree with each other
    (outputs with `...` are left alone). Nothing is written when the doc matched."""
    if not outcome.problems:
        return
    lines = doc.read_text().splitlines()
    for block in reversed(blocks(doc)):
        if block.lang != "console" or block.file is not None:
            continue
        new: list[str] = []
        for step in steps(block):
            if step.line not in outcome.seen:
                new += [f"$ {step.command}", *step.expected]
            elif ELLIPSIS in step.expected:
                new += [f"$ {outcome.seen[step.line][0]}", *step.expected]
            else:
                command, output = outcome.seen[step.line]
                new += [f"$ {command}", *output]
        lines[block.line:block.line + len(block.lines)] = new
    doc.write_text("\n".join(lines) + "\n")


def main() -> None:
    from .mirrortree import MirrorServer, build_mirror

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", nargs="*", type=Path)
    parser.add_argument("--update", action="store_true")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as temp:
        tree = build_mirror(Path(temp) / "mirror")
        with MirrorServer(tree.root) as server:
            for doc in [d.resolve() for d in args.docs] or DOCS:
                work = Path(temp) / doc.stem
                outcome = check(doc, prepare(work, server.url))
                for problem in outcome.problems:
                    print(problem, file=sys.stderr)
                failed |= bool(outcome.problems)
                if args.update:
                    update(doc, outcome)
    sys.exit(1 if failed and not args.update else 0)


if __name__ == "__main__":
    main()
