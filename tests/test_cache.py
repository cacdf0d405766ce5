"""The content-addressed cache: atomic entries, refs by mirror path, leftovers swept."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path

import pytest

from tcbuild.sources.cache import DERIVED_DAYS, Absent, Cache, CachedObject


def test_store_and_lookup(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    obj = cache.store_bytes("15.x/x86_64/tcz/a.tcz", b"abc", "http://m/15.x/x86_64/tcz/a.tcz")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert obj.path == tmp_path / "objects" / digest[:2] / digest
    assert obj.path.read_bytes() == b"abc" and obj.path.stat().st_mode & 0o222 == 0
    assert cache.lookup("15.x/x86_64/tcz/a.tcz") == CachedObject(obj.path, digest, 3,
                                                                "http://m/15.x/x86_64/tcz/a.tcz")
    assert cache.lookup("15.x/x86_64/tcz/b.tcz") is None
    cache.store_absent("15.x/x86_64/tcz/a.tcz.dep", "http://m/x")
    assert cache.lookup("15.x/x86_64/tcz/a.tcz.dep") == Absent("http://m/x")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_damaged_object_is_a_miss(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    obj = cache.store_bytes("k", b"abcdef", "src")
    obj.path.chmod(0o644)
    obj.path.write_bytes(b"abc")  # size no longer matches the ref
    assert cache.lookup("k") is None
    obj.path.unlink()
    assert cache.lookup("k") is None


def test_unsafe_keys_are_refused(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for key in ("/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError, match="unsafe cache key"):
            cache.lookup(key)


def test_leftovers_of_killed_runs_are_swept_but_not_live_downloads(tmp_path: Path) -> None:
    Cache(tmp_path)
    stale = tmp_path / "tmp" / "download-stale"
    stale.write_bytes(b"partial")
    live = tmp_path / "tmp" / "download-live"
    live.write_bytes(b"")
    with live.open("wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a running download holds it
        Cache(tmp_path)
        assert live.exists()
    assert not stale.exists()


def test_a_temp_file_swept_before_its_lock_is_replaced(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    real_mkstemp = tempfile.mkstemp
    calls = []

    def racing_mkstemp(**kw: object) -> tuple[int, str]:
        fd, name = real_mkstemp(**kw)  # type: ignore[call-overload]
        calls.append(name)
        if len(calls) == 1:
            Path(name).unlink()  # another run's sweep got there first
        return fd, name  # type: ignore[no-any-return]

    tempfile.mkstemp = racing_mkstemp  # type: ignore[assignment]
    try:
        obj = cache.store_bytes("k", b"data", "src")
    finally:
        tempfile.mkstemp = real_mkstemp
    assert [Path(c).name.split("-")[0] for c in calls[:2]] == ["download", "download"]
    assert Path(calls[2]).name.startswith(".k.json.")  # the ref
    assert obj.path.read_bytes() == b"data"


def test_notes(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    assert cache.note("ab" * 32) == {}
    cache.add_note("ab" * 32, kernel_version="6.6.8-tinycore64")
    cache.add_note("ab" * 32, other=1)
    assert Cache(tmp_path).note("ab" * 32) == {"kernel_version": "6.6.8-tinycore64", "other": 1}


def test_derived_data_is_checked_and_swept_when_unused(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    used, unused, fresh = (hashlib.sha256(n.encode()).hexdigest() for n in ("a", "b", "c"))
    for key in (used, unused, fresh):
        cache.store_derived(key, [b"index ", key.encode()])
    month = DERIVED_DAYS * 86400
    old = time.time() - month - 60
    for key in (used, unused):
        os.utime(cache._derived_path(key), (old, old))
    assert cache.derived(used) == b"index " + used.encode()  # a use keeps it another month
    Cache(tmp_path)  # the next run sweeps
    assert cache.derived(unused) is None and cache.derived_file(unused) is None
    assert cache.derived(used) is not None and cache.derived(fresh) is not None
    path = cache._derived_path(fresh)
    path.write_bytes(path.read_bytes()[:-1] + b"!")  # damaged: a miss, made again by the caller
    assert cache.derived(fresh) is None
