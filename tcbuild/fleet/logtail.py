"""A node's log files read from their end: only the tail since its last boot matters.

A plain file is read backwards in blocks (`BLOCK` bytes at a time from its end), so a node's
view costs the lines since its last boot, not the months before; a compressed rotation cannot
be read backwards, so its lines are read forwards once and handed over last first. Each line
comes with its byte offset (plain) or its number (compressed): its place in the file, for
ordering lines of one file. A line is one `\\n`-ended piece (a `\\r` before it stays, a
final piece without a newline is a line too), as iterating over the file gives them; `keep`
picks the lines worth decoding (a cheap test on the raw bytes). A read error ends the lines
with a warning, as `view` does for forward reading.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import zlib
from collections.abc import Callable, Generator, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO, Any

from ..config.inventory import Host, log_names
from ..errors import InputError
from .view import BOOT_TAG, Latest, Line, NodeLog, boot_of, later, parse_line, rotation_rank

log = logging.getLogger("tcbuild")

BLOCK = 64 * 1024
OPENERS: dict[str, Any] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def backwards(path: Path, keep: Callable[[bytes], bool], block: int = BLOCK,
              end: int | None = None) -> Generator[tuple[int, bytes], None, None]:
    """The file's lines that `keep` accepts, last first, each with its place in the file;
    `end`: a plain file's lines before that offset only."""
    if path.suffix in OPENERS:
        yield from reversed(_forwards(path, keep))
        return
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            yield from _blocks_backwards(f, size if end is None else min(end, size), keep,
                                         block)
    except READ_ERRORS as e:
        log.warning("%s: unreadable, the rest skipped (%s)", path,
                    getattr(e, "strerror", None) or e)


def last_line_end(path: Path, block: int = BLOCK) -> int:
    """The offset just past a plain file's last newline (0 without one); 0 when unreadable."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, 2)
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                found = f.read(end - start).rfind(b"\n")
                if found >= 0:
                    return start + found + 1
                end = start
    except OSError:
        pass
    return 0


def _blocks_backwards(f: IO[bytes], size: int, keep: Callable[[bytes], bool], block: int
                      ) -> Iterator[tuple[int, bytes]]:
    end, buf = size, b""
    stop = -1  # where the unread part of `buf` ends; -1 before the first block
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        buf = f.read(end - start) + (buf[:stop] if stop >= 0 else b"")
        end = start
        # a final newline ends the last line, it starts no empty one
        stop = len(buf) - (stop < 0 and buf.endswith(b"\n"))
        while (newline := buf.rfind(b"\n", 0, stop)) >= 0:
            raw = buf[newline + 1:stop]
            if keep(raw):
                yield start + newline + 1, raw
            stop = newline
        if start == 0 and keep(buf[:stop]):  # the first line, empty or not
            yield 0, buf[:stop]


def hits_backwards(path: Path, needle: bytes, end: int, block: int = BLOCK
                   ) -> Iterator[tuple[int, bytes]]:
    """A plain file's lines before offset `end` that hold `needle`, last first, each with its
    offset: the blocks are searched for `needle`, the lines without it never split apart."""
    try:
        with path.open("rb") as f:
            carry = b""  # the start of a line the last block cut, up to where that block began
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                buf = f.read(end - start) + carry
                head = buf.find(b"\n") + 1 if start > 0 else 0  # whole lines begin here
                if start > 0 and head == 0:  # one line longer than the block: read on
                    carry, end = buf, start
                    continue
                stop = len(buf)
                while (hit := buf.rfind(needle, head, stop)) >= 0:
                    newline = buf.rfind(b"\n", head, hit)
                    begin = newline + 1 if newline >= 0 else head
                    finish = buf.find(b"\n", hit, stop)
                    yield start + begin, buf[begin:finish if finish >= 0 else stop]
                    stop = begin
                carry, end = buf[:head], start
    except READ_ERRORS as e:
        log.warning("%s: unreadable, the rest skipped (%s)", path,
                    getattr(e, "strerror", None) or e)


def _forwards(path: Path, keep: Callable[[bytes], bool]) -> list[tuple[int, bytes]]:
    """A compressed file's kept lines, first first, read a MiB at a time; a damaged file is
    read again line by line, so that what comes before the damage counts."""
    kept: list[tuple[int, bytes]] = []
    try:
        f: IO[bytes]
        with OPENERS[path.suffix](path, "rb") as f:
            carry = b""
            while chunk := f.read(1 << 20):
                lines = (carry + chunk).split(b"\n")
                carry = lines.pop()
                kept += [(len(kept), raw) for raw in lines]
            if carry:
                kept.append((len(kept), carry))
    except READ_ERRORS:
        return _forwards_line_by_line(path, keep)
    return [(number + 1, raw) for number, raw in kept if keep(raw)]


def _forwards_line_by_line(path: Path, keep: Callable[[bytes], bool]
                           ) -> list[tuple[int, bytes]]:
    kept: list[tuple[int, bytes]] = []
    number = 0
    try:
        f: IO[bytes]
        with OPENERS[path.suffix](path, "rb") as f:
            for raw in f:
                number += 1
                if keep(raw):
                    kept.append((number, raw.rstrip(b"\n")))
    except READ_ERRORS as e:
        log.warning("%s: unreadable after line %d, the rest skipped (%s)", path, number,
                    getattr(e, "strerror", None) or e)
    return kept


def read_node(logs: Path, host: Host, index: LogIndex | None = None) -> NodeLog:
    """The node's last line, boot and error from `<name>.log`, `<name>-err.log` and rotations,
    each line counted only if it came from the node's address (`index`: the directory's
    `log_index`, listed once for many hosts).

    Files are read newest first and from their end: `<name>.log` back to its last boot line,
    `<name>-err.log` back to its last line. An older rotation is read only while a boot (or an
    error) is still missing, or when it was written to (its mtime) at or after the lines kept,
    so it could hold a later one; lines of one file are taken to be in time order.
    """
    latest = Latest()
    files = sorted(_node_files(logs, host, index), key=lambda f: f[1], reverse=True)
    for path, rank, errors in files:
        if needed(path, errors, latest):
            tail_scan(path, host.ip, rank, errors, latest)
    return latest.node()


def needed(path: Path, errors: bool, latest: Latest) -> bool:
    """Whether an older file could change `latest`: a boot (an error, for an -err.log file) is
    still missing, or it was written to at or after the one kept."""
    kept = latest.error if errors else latest.boot
    if kept is None:
        return True
    try:
        return path.stat().st_mtime >= kept[0][0].timestamp()
    except OSError:
        return True  # reading it warns


def tail_scan(path: Path, source: IPv4Address, rank: tuple[int, int, str], errors: bool,
              latest: Latest, end: int | None = None) -> None:
    """`scan` over the file's end (`end`: a plain file's bytes before that offset): its lines
    last first, back to the first boot line (with `errors`, the first line) that came from
    `source`. Past the file's last line from `source` only boot lines can matter: the others
    are not parsed."""
    address, tag = f" {source} ".encode(), f" {BOOT_TAG}".encode()
    lines = backwards(path, lambda raw: address in raw, end=end)
    for offset, raw in lines:
        came, done = _take(raw, offset, source, rank, errors, latest)
        if done:
            return
        if came:
            break
    else:
        return  # nothing from `source`
    rest: Iterator[tuple[int, bytes]] = lines  # a compressed file's, in memory
    if path.suffix not in OPENERS:  # before it, the blocks are searched for boot lines
        lines.close()
        rest = hits_backwards(path, tag, offset)
    for offset, raw in rest:
        if tag in raw and address in raw and _take(raw, offset, source, rank, errors,
                                                   latest)[1]:
            return


def _take(raw: bytes, offset: int, source: IPv4Address, rank: tuple[int, int, str],
          errors: bool, latest: Latest) -> tuple[bool, bool]:
    """A line read back into `latest` if it came from `source`: whether it did, and whether
    the reading is done (a boot line; any line of an -err.log file)."""
    line = parse_line(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    if line is None or line.source != source:
        return False, False
    key = (line.time, rank, offset)
    latest.last = later(latest.last, key, line)
    if errors:
        latest.error = later(latest.error, key, line)
        return True, True
    boot = boot_of(line)
    if boot is not None:
        latest.boot = later(latest.boot, key, boot)
        return True, True
    return True, False


def node_lines(logs: Path, host: Host) -> Iterator[tuple[Line, bool]]:
    """Every line of the node's files (rotations too) that came from its address, with
    whether it sits in the error file; file by file, in no particular order."""
    for path, _, errors in _node_files(logs, host):
        for text in file_lines(path):
            line = parse_line(text.rstrip("\r\n"))
            if line is not None and line.source == host.ip:
                yield line, errors


LogIndex = dict[str, list[tuple[str, tuple[int, int, str]]]]


def log_index(logs: Path) -> LogIndex:
    """The log directory listed once: each base name (`<node>.log`, `<node>-err.log`) with its
    files and their rotation ranks."""
    try:
        names = sorted(p.name for p in logs.iterdir())
    except OSError as e:
        raise InputError(f"{logs}: cannot list the log directory ({e.strerror or e})") from e
    index: LogIndex = {}
    for name in names:
        at = name.find(".log")
        while at >= 0:
            base = name[:at + 4]
            rank = rotation_rank(base, name)
            if rank is not None:
                index.setdefault(base, []).append((name, rank))
            at = name.find(".log", at + 1)
    return index


def _node_files(logs: Path, host: Host, index: LogIndex | None = None
                ) -> list[tuple[Path, tuple[int, int, str], bool]]:
    """The node's log files and rotations: (path, rotation rank, is the error file)."""
    index = log_index(logs) if index is None else index
    return [(logs / name, rank, errors)
            for base, errors in zip(log_names(host.name), (False, True), strict=True)
            for name, rank in index.get(base, [])]


def file_lines(path: Path) -> Iterator[str]:
    """The file's lines, decompressed and decoded; a read error ends them with a warning."""
    opener = OPENERS.get(path.suffix, open)
    number = 0
    try:
        f: IO[bytes]
        with opener(path, "rb") as f:
            for raw in f:
                number += 1
                yield raw.decode("utf-8", errors="replace")
    except READ_ERRORS as e:
        log.warning("%s: unreadable after line %d, the rest skipped (%s)", path, number,
                    getattr(e, "strerror", None) or e)
