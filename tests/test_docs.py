"""The docs still say what tcbuild does: every command they show is run and its output
compared, every file they show in full compared with the repository's (tests/kit/docskit.py)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from .kit.docskit import DOCS, ROOT, Ids, blocks, check, prepare, steps
from .kit.mirrortree import MirrorServer
from .kit.requires import require_tool

README = ROOT / "README.md"


@pytest.mark.parametrize("doc", [
    pytest.param(d, marks=[pytest.mark.qemu] if "$ tcbuild boot-test" in d.read_text() else [])
    for d in DOCS], ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_doc_matches_what_tcbuild_does(doc: Path, tmp_path: Path, mirror: MirrorServer) -> None:
    if "$ tcbuild boot-test" in doc.read_text():
        require_tool("qemu-system-x86_64", "qemu-system-x86")
    outcome = check(doc, prepare(tmp_path / "site", mirror.url))
    assert not outcome.problems, "\n\n".join(outcome.problems) + (
        "\n\n(when tcbuild changed on purpose: python -m tests.kit.docskit --update "
        f"{doc.relative_to(ROOT)}, then read the diff)")


def test_what_varies_is_compared_by_its_place() -> None:
    """Two publishes in one second make a release id longer by `.2`, and columns shift."""
    shown, seen = Ids(), Ids()
    a = shown.normalize("s1  release 20261130T160220Z-49e327b78a12    took 1.40 s  981.2 KiB")
    b = seen.normalize("s1  release 20261130T172415Z-5f2fb024e12d.2  took 0.12 s  1.0 MiB")
    assert a == "s1  release <release1>  took N s  N KiB" and b.replace("MiB", "KiB") == a
    assert Ids().normalize("build 49e327b78a12 and 49e327b78a12") == "build <build1> and <build1>"


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    # The first screen: the two set-up commands, exactly these, in one block.
    first = next(b for b in blocks(README))
    assert first.line < 30
    assert [line.split("#")[0].strip() for line in first.lines] == ["make demo", "make test"]


def test_the_command_list_is_every_command() -> None:
    """The front page's list names each subcommand of `tcbuild`, and no other."""
    from tcbuild.cli.grammar import parser

    listed = next(b for b in blocks(README) if b.lang == "text"
                  and all(line.startswith("tcbuild ") for line in b.lines))
    names = [line.split()[1] for line in listed.lines]
    actions = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(names) == sorted(actions[0].choices)


def test_docs_links_and_blocks_are_checked() -> None:
    """Every relative link leads to a file; no transcript (`$ ...`) escapes the docs test."""
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text):
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)}: link to {target}"
        for block in blocks(doc):
            checked = block.file is not None or block.lang in ("console", "python", "toml")
            assert checked or not any(line.startswith("$ ") for line in block.lines), block.where
            if block.lang == "console":
                assert steps(block), f"{block.where}: a console block without a `$ ` command"
        # An indented transcript would not be run either.
        assert not re.search(r"^    \$ ", text, re.M), f"{doc.relative_to(ROOT)}: use ```console"
