"""The parsers under arbitrary input: only tcbuild's own error type may escape (bounded runs)."""

from __future__ import annotations

import contextlib
import gzip
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcbuild import TcbuildError, load_recipe
from tcbuild.boot.pxelinux import parse
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.formats.newc import HEADER_SIZE, iter_initramfs, read_entries
from tcbuild.formats.tcz import check_tcz, pack_directory, read_tcz
from tcbuild.sources.deps import parse_dep

from .kit.requires import require_tool

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
HEADER = b"070701" + b"0" * (HEADER_SIZE - 6)


def _newc_like() -> st.SearchStrategy[bytes]:
    """Bytes that often start like a newc header, so the reader gets past the magic."""
    hexfield = st.text("0123456789abcdefABCDEF", min_size=8, max_size=8).map(str.encode)
    header = st.lists(hexfield, min_size=13, max_size=13).map(b"".join)
    return st.one_of(st.binary(max_size=600),
                     st.tuples(header, st.binary(max_size=400)).map(lambda t: b"070701" + t[0]
                                                                     + t[1]))


@FUZZ
@given(_newc_like())
def test_cpio_reader_raises_only_its_error(data: bytes) -> None:
    try:
        for entry in read_entries(io.BytesIO(data), source="fuzz"):
            assert entry.size == len(entry.data or b"")
    except TcbuildError:
        pass


@FUZZ
@given(st.binary(max_size=800))
def test_initramfs_files_raise_only_its_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for blob in (data, gzip.compress(data), gzip.compress(HEADER + data)[:-3]):
            path = Path(tmp) / "core.gz"
            path.write_bytes(blob)
            with contextlib.suppress(TcbuildError):
                list(iter_initramfs(path))


@FUZZ
@given(st.binary(max_size=400))
def test_dep_reader_never_fails(data: bytes) -> None:
    names = parse_dep(data)
    assert all(name and not any(c in name for c in " \t\r\n") for name in names)


TOML_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from([
        "[tinycore]", 'release = "15.x"', "release = 15", 'flavor = "core"', "flavor = []",
        "[extensions]", 'install = ["a", 1]', "install = 3", 'local = ["x.tcz"]', "[[overlay]]",
        'source = "."', "[vars]", "a = 1", "x.y = 2", "[boot]", 'append = "base"', "[image]",
        'remove = ["*"]', 'output = "append"', '[files."/a"]', 'mode = "0755"', "mode = 99999",
        "[cluster]", 'boot_server = "10.1.1.1"', 'internal_subnet = "10.1.1.0/24"', "[[host]]",
        'mac = "ab:cd:ef:00:00:01"', 'ip = "10.1.1.300"', 'name = "-x"', "[group.a]", "= =",
    ]), max_size=12).map("\n".join),
)


@FUZZ
@given(TOML_TEXT)
def test_recipe_and_inventory_loaders_raise_only_their_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.toml"
        path.write_text(text)
        for load in (load_recipe, load_inventory):
            try:
                load(path)
            except TcbuildError as e:
                assert str(e).startswith(str(path))


@FUZZ
@given(st.lists(st.sampled_from([
    "DEFAULT a", "LABEL a", "LABEL b", "KERNEL k", "INITRD i", "APPEND x=1", "SERIAL 0 115200",
    "TIMEOUT 10", "TIMEOUT x", "PROMPT 1", "# c", "", "MENU x", "kernel k2", "   ", "DEFAULT",
]), max_size=12).map("\n".join))
def test_pxelinux_reader_raises_only_its_error(text: str) -> None:
    try:
        config = parse(text, "cfg")
    except TcbuildError:
        return
    assert config.label(config.default).kernel


def _small_tcz() -> bytes:
    """A real extension made by mksquashfs (Tiny Core's settings), built once."""
    global _TCZ
    if _TCZ is None:
        require_tool("mksquashfs", "squashfs-tools")
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "tree/usr/local"
            (tree / "bin").mkdir(parents=True)
            (tree / "bin/tool").write_bytes(b"#!/bin/sh\necho tool\n" * 40)
            (tree / "bin/link").symlink_to("tool")
            (tree / "share/doc").mkdir(parents=True)
            (tree / "share/doc/README").write_text("words " * 500)
            pack_directory(Path(tmp) / "tree", Path(tmp) / "x.tcz")
            _TCZ = (Path(tmp) / "x.tcz").read_bytes()
    return _TCZ


_TCZ: bytes | None = None


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
       st.one_of(st.none(), st.integers(min_value=0)))
def test_squashfs_reader_raises_only_its_error(flips: list[tuple[int, int]],
                                               cut: int | None) -> None:
    data = bytearray(_small_tcz())
    for at, value in flips:
        data[at % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.tcz"
        path.write_bytes(bytes(data))
        with contextlib.suppress(TcbuildError):
            check_tcz(path)
            for entry in read_tcz(path):
                assert entry.name
