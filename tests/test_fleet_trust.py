"""`tcbuild fleet` trusts the log host, not the sender: who a line is from is its file and its
source address (both the inventory's), when is the log host's receive time; a line it cannot
read is skipped, never fatal.

tests/data/hostile-log-lines.txt keeps hostile lines (times past either end of the calendar,
forged names and addresses, binary) for any test that reads log lines.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcbuild.fleet.view import Latest, parse_line, scan

from .test_fleet import NEW, OLD, T0, boot_line, inventory_with, syslog, tcbuild, tftp_tree

HOSTILE = Path(__file__).resolve().parent / "data/hostile-log-lines.txt"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERVER1 = IPv4Address("10.1.1.5")
FAKE = "bootlocal: game-server node, build 222222222222, release 20261130T080000Z-222222222222"


def hostile_lines() -> list[bytes]:
    """The corpus's lines, split as `fleet` splits a file: at b"\\n" only (a \\r, \\x85 or
    U+2028 inside a line is part of it)."""
    return HOSTILE.read_bytes().removesuffix(b"\n").split(b"\n")


def fleet(tmp_path: Path, server1: bytes, server1_err: bytes = b"") -> dict[str, dict[str, str]]:
    """`fleet --json` over a site where server2 booted OLD and server1's files hold these."""
    inventory = inventory_with(tmp_path)
    logs = tmp_path / "remote"
    logs.mkdir()
    (logs / "server1.log").write_bytes(server1)
    if server1_err:
        (logs / "server1-err.log").write_bytes(server1_err)
    (logs / "server2.log").write_text(boot_line(T0, "10.1.1.6", OLD))
    tftp = tftp_tree(tmp_path / "tftp", NEW, {})
    done = tcbuild("fleet", "--inventory", inventory, "--logs", logs, "--tftp", tftp, "--json")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    view = {n["name"]: n for n in json.loads(done.stdout)["hosts"]}
    assert (view["server2"]["state"], view["server2"]["release"]) == ("stale", OLD)
    return view


def test_a_name_the_sender_wrote_is_not_its_identity(tmp_path: Path) -> None:
    """RSYSLOG_FileFormat's host field is the sender's own word: `evil-box` in server1.log
    made `fleet` report that server1 booted build 222222222222."""
    view = fleet(tmp_path, f"{T0.isoformat()} evil-box {FAKE}, kernel 6.1.0\n".encode())
    assert view["server1"]["state"] == "never seen"
    assert view["server1"]["build"] is None


def test_a_line_from_another_address_is_not_counted(tmp_path: Path) -> None:
    """A line in server1's file counts only when it came from server1's address."""
    own = boot_line(T0, "10.1.1.5", NEW)
    later = T0 + timedelta(hours=1)
    forged = "".join(syslog(later, source, "bootlocal", FAKE.split(": ", 1)[1])
                     for source in ("10.1.1.6", "10.1.1.66"))
    errors = syslog(later, "10.1.1.66", "master", "planted error")
    view = fleet(tmp_path, (own + forged).encode(), errors.encode())
    one = view["server1"]
    assert (one["state"], one["release"], one["booted"]) == ("current", NEW,
                                                             "2026-11-30T09:00:00Z")
    assert one["last_seen"] == "2026-11-30T09:00:00Z" and one["last_error"] is None


def test_times_past_either_end_of_the_calendar_are_skipped(tmp_path: Path) -> None:
    """`OverflowError: date value out of range` ended `fleet` for the whole fleet."""
    huge = [f"9999-12-31T23:59:59-01:00 10.1.1.5 {FAKE}\n",
            f"0001-01-01T00:00:00+01:00 10.1.1.5 {FAKE}\n"]
    for text in huge:
        assert parse_line(text.rstrip("\n")) is None
    view = fleet(tmp_path, (boot_line(T0, "10.1.1.5", NEW) + "".join(huge)).encode(),
                 "".join(huge).encode())
    assert (view["server1"]["state"], view["server1"]["build"]) == ("current", NEW[-12:])
    assert view["server1"]["last_error"] is None


def test_the_hostile_corpus_changes_nothing(tmp_path: Path) -> None:
    """Every hostile line in server1's files, around one true boot line: the view is that
    boot's, nothing else, and `fleet` ends well."""
    corpus = hostile_lines()
    assert len(corpus) >= 40
    assert any(b"9999-12-31T23:59:59-01:00" in line for line in corpus)
    assert any(b"0001-01-01T00:00:00+01:00" in line for line in corpus)
    assert any(b"evil-box" in line for line in corpus)
    assert any(b"\x00" in line for line in corpus)
    hostile = b"\n".join(corpus) + b"\n"
    view = fleet(tmp_path, hostile + boot_line(T0, "10.1.1.5", NEW).encode() + hostile,
                 hostile)
    one = view["server1"]
    assert (one["state"], one["build"], one["release"]) == ("current", NEW[-12:], NEW)
    assert (one["booted"], one["last_seen"], one["last_error"]) == (
        "2026-11-30T09:00:00Z", "2026-11-30T09:00:00Z", None)


def test_no_hostile_line_counts() -> None:
    latest = Latest()
    scan(enumerate(line.decode("utf-8", errors="replace") for line in hostile_lines()), SERVER1,
         (2, 0, ""), True, latest)
    assert latest == Latest()


# -- fuzzing: never an exception, and only well-formed lines from the address count -----------


@FUZZ
@given(st.text(max_size=300))
def test_any_text_parses_or_is_skipped(text: str) -> None:
    line = parse_line(text)
    if line is not None:
        assert line.time.tzinfo is UTC and str(line.source) in text


def _stamps() -> st.SearchStrategy[str]:
    """RFC 3339-like times, with years at both ends of the calendar and odd zones."""
    year = st.one_of(st.sampled_from([0, 1, 2026, 9998, 9999]), st.integers(0, 9999))
    two = st.integers(0, 99).map(lambda n: f"{n:02d}")
    fraction = st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=30)
                         .map(lambda d: f".{d}"))
    zone = st.one_of(st.just("Z"), st.tuples(st.sampled_from("+-"), two, two)
                     .map(lambda t: f"{t[0]}{t[1]}:{t[2]}"))
    return st.tuples(year.map(lambda y: f"{y:04d}"), two, two, two, two, two, fraction, zone).map(
        lambda t: f"{t[0]}-{t[1]}-{t[2]}T{t[3]}:{t[4]}:{t[5]}{t[6]}{t[7]}")


@FUZZ
@given(_stamps(), st.sampled_from(["10.1.1.5", "10.1.1.6", "10.1.1.500", "evil-box", ""]),
       st.text(max_size=80))
def test_hostile_times_and_sources_never_fail(stamp: str, source: str, message: str) -> None:
    text = f"{stamp} {source} bootlocal: {message}"
    latest = Latest()
    scan([(0, text)], SERVER1, (2, 0, ""), False, latest)
    line = parse_line(text)
    if latest.last is not None:
        assert line is not None and line.source == SERVER1 and "\n" not in text
        assert datetime.min.replace(tzinfo=UTC) <= line.time <= datetime.max.replace(tzinfo=UTC)


@FUZZ
@given(st.binary(max_size=400))
def test_binary_lines_never_fail(data: bytes) -> None:
    latest = Latest()
    scan(enumerate(data.decode("utf-8", errors="replace").splitlines()), SERVER1, (2, 0, ""),
         True, latest)
