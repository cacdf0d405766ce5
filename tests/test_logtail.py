"""Log files read from their end (`fleet.logtail`) and the fleet view that reads only the tail
since a node's last boot (`fleet.logtail.read_node`): the same lines, last first, whatever the
block size; older rotations read only when they could matter."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tcbuild.config.inventory import Host
from tcbuild.fleet.logtail import backwards, hits_backwards, log_index, read_node

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
IP = "10.1.1.5"
HOST = Host(name="server1", mac="52:54:00:12:34:56", ip=IPv4Address(IP),
            second_ip=IPv4Address("172.16.1.5"), group=None)


def every(raw: bytes) -> bool:
    return True


def forwards(data: bytes) -> list[bytes]:
    """What iterating over the file gives, without the newlines: the reference."""
    return [line.rstrip(b"\n") for line in data.splitlines(keepends=True)]


CASES = {
    "empty": b"",
    "one line": b"one\n",
    "no newline at the end": b"one\ntwo\nthree",
    "crlf": b"one\r\ntwo\r\n",
    "empty lines": b"\n\n\na\n\n",
    "only a newline": b"\n",
    "a long line": b"x" * 1000 + b"\n" + b"y" * 3 + b"\n" + b"z" * 700,
    "binary": b"\x00\xff\n\xfe\x01\n\x00",
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 65536])
def test_backwards_gives_the_lines_last_first(tmp_path: Path, name: str, block: int) -> None:
    data = CASES[name]
    path = tmp_path / "node.log"
    path.write_bytes(data)
    got = list(backwards(path, every, block))
    assert [raw for _, raw in got] == forwards(data)[::-1]
    assert [offset for offset, _ in got] == sorted((o for o, _ in got), reverse=True)
    for offset, raw in got:  # each offset is where its line starts
        assert data[offset:offset + len(raw)] == raw


HITS = {**CASES, "needles": b"a x\nno\nx\n" + b"-" * 40 + b"x" + b"-" * 40 + b"\nxx\nend x",
        "needle at the edges": b"x\n\nx", "crlf needles": b"x\r\n y\r\nyx\r\n"}


@pytest.mark.parametrize("name", HITS)
@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 65536])
def test_hits_backwards_are_the_lines_holding_the_needle(tmp_path: Path, name: str,
                                                         block: int) -> None:
    """The blocks searched for the needle give what `backwards` filtered by it gives, from
    any end (a line's start), whatever the block size."""
    data = HITS[name]
    path = tmp_path / "node.log"
    path.write_bytes(data)
    starts = [offset for offset, _ in backwards(path, every)] + [len(data)]
    for end in starts:
        want = list(backwards(path, lambda raw: b"x" in raw, end=end))
        assert list(hits_backwards(path, b"x", end, block)) == want, end


def test_compressed_files_are_read_forwards_and_handed_over_last_first(tmp_path: Path) -> None:
    data = b"one\ntwo\nthree"
    path = tmp_path / "node.log.2.gz"
    path.write_bytes(gzip.compress(data))
    assert [raw for _, raw in backwards(path, every)] == [b"three", b"two", b"one"]
    assert [raw for _, raw in backwards(path, lambda raw: b"o" in raw)] == [b"two", b"one"]


def line(when: datetime, text: str, source: str = IP) -> bytes:
    return f"{when.isoformat(timespec='microseconds')} {source} {text}\n".encode()


def boot(when: datetime, build: str) -> bytes:
    return line(when, f"bootlocal: game-server node, build {build}, release unknown")


def test_a_boot_line_split_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """The boot line straddles a block boundary; hostile and foreign lines after it."""
    monkeypatch.setattr("tcbuild.fleet.logtail.BLOCK", 16)
    tail = (line(T0 + timedelta(minutes=1), "master: up")
            + line(T0 + timedelta(minutes=2), "bootlocal: forged, build 999999999999",
                   "10.1.1.66")
            + b"\x00\xff garbage " + IP.encode() + b" \r\n"
            + line(T0 + timedelta(minutes=3), "master: players 3").rstrip(b"\n") + b"\r\n")
    (tmp_path / "server1.log").write_bytes(boot(T0 - timedelta(days=1), "aaaaaaaaaaaa")
                                           + boot(T0, "bbbbbbbbbbbb") + tail)
    node = read_node(tmp_path, HOST)
    assert node.boot is not None and (node.boot.build, node.boot.time) == ("bbbbbbbbbbbb", T0)
    assert node.last is not None and node.last.time == T0 + timedelta(minutes=3)
    assert node.last.text == "master: players 3"


def test_old_rotations_are_read_only_when_they_can_matter(tmp_path: Path) -> None:
    """An older rotation written before the current file's boot is not opened (a corrupt one
    would warn); once its mtime says it was written after, it is read and its later line
    counts."""
    (tmp_path / "server1.log").write_bytes(boot(T0, "bbbbbbbbbbbb")
                                           + line(T0 + timedelta(minutes=5), "master: up"))
    (tmp_path / "server1-err.log").write_bytes(line(T0 + timedelta(minutes=4), "master: oops"))
    old = tmp_path / "server1.log.2.gz"
    old.write_bytes(gzip.compress(boot(T0 - timedelta(days=9), "aaaaaaaaaaaa")
                                  + line(T0 + timedelta(hours=2), "kernel: clock ahead")))
    before = (T0 - timedelta(days=2)).timestamp()
    os.utime(old, (before, before))
    index = log_index(tmp_path)
    node = read_node(tmp_path, HOST, index)
    assert node.boot is not None and node.boot.build == "bbbbbbbbbbbb"
    assert node.last is not None and node.last.time == T0 + timedelta(minutes=5)
    assert node.error is not None and node.error.text == "master: oops"
    after = (T0 + timedelta(hours=3)).timestamp()
    os.utime(old, (after, after))
    node = read_node(tmp_path, HOST, index)
    assert node.last is not None and node.last.text == "kernel: clock ahead"
    assert node.boot is not None and node.boot.build == "bbbbbbbbbbbb"  # still the latest


def test_without_a_boot_in_the_current_file_the_rotations_are_read(tmp_path: Path) -> None:
    (tmp_path / "server1.log").write_bytes(line(T0, "master: up"))
    (tmp_path / "server1.log.1").write_bytes(line(T0 - timedelta(days=3), "master: x"))
    (tmp_path / "server1.log.2.gz").write_bytes(gzip.compress(boot(T0 - timedelta(days=9),
                                                                   "aaaaaaaaaaaa")))
    for name, days in (("server1.log.1", 2), ("server1.log.2.gz", 8)):
        stamp = (T0 - timedelta(days=days)).timestamp()
        os.utime(tmp_path / name, (stamp, stamp))
    node = read_node(tmp_path, HOST)
    assert node.boot is not None and node.boot.time == T0 - timedelta(days=9)
    assert node.last is not None and node.last.time == T0
