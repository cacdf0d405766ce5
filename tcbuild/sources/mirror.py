"""Tiny Core mirrors: URL layout, and verified downloads with retries and fail-over."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from ..errors import ChecksumError, FetchError

if TYPE_CHECKING:  # imported when first needed: a build from the cache starts faster
    import requests

Reset = Callable[[int | None], None]  # a (re)started body, with its announced length
Write = Callable[[bytes], None]

USER_AGENT = "tcbuild (+https://tinycorelinux.net mirror client)"
CHUNK = 1 << 16
MAX_REDIRECTS = 5


def release_path(major: int, build: str, filename: str) -> str:
    """`15.x/x86_64/release/distribution_files/vmlinuz64`: where a release file lives."""
    return f"{major}.x/{build}/release/distribution_files/{filename}"


def iso_path(major: int, build: str, filename: str) -> str:
    """`15.x/x86_64/release/CorePure64-15.0.iso`: where an official ISO lives."""
    return f"{major}.x/{build}/release/{filename}"


def tcz_path(major: int, build: str, filename: str) -> str:
    """`15.x/x86_64/tcz/dhcp.tcz`: where an extension and its `.dep`/`.md5.txt` live."""
    return f"{major}.x/{build}/tcz/{filename}"


def parse_md5_txt(text: bytes, source: str) -> str:
    """The hash in an md5sum line (`<hash>  <name>`)."""
    match = re.match(rb"\s*([0-9a-fA-F]{32})\b", text)
    if not match:
        raise FetchError(f"{source}: not an md5sum line: {text[:60]!r}")
    return match[1].decode().lower()


class NotFound(FetchError):
    """Every mirror that could be reached answered 404 (or 410) for a path: the only answer
    that means "absent" (a mirror that cannot be reached says nothing)."""


class _Transient(Exception):
    """A failure worth retrying: connection error, timeout, 5xx, a short body."""


class _Permanent(Exception):
    """A failure retrying the same mirror will not fix."""


class _Unreachable(_Transient):
    """No connection to the mirror (refused, no such host, connect timeout): it said nothing
    about the file, so the other mirrors' answers decide."""


@dataclass(frozen=True)
class Download:
    """A finished download: where from, and the checksums of what was written."""

    url: str
    mirror: str
    size: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class Policy:
    """How hard to try: attempts per mirror, first back-off delay (doubles), timeouts (s)."""

    attempts: int = 3
    backoff: float = 0.5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0


class Mirrors:
    """An ordered list of mirrors; each request tries them in turn, retrying transient errors."""

    def __init__(self, urls: tuple[str, ...], policy: Policy | None = None) -> None:
        if not urls:
            raise FetchError("no mirror configured")
        self.urls = urls
        self.policy = policy or Policy()
        self._local = threading.local()

    @property
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
        return session

    def get(self, path: str) -> tuple[str, bytes] | None:
        """A small file from the first mirror that has it: (url, body); None when every mirror
        answered 404 (a mirror that failed otherwise may have it: that is a `FetchError`)."""
        chunks: list[bytes] = []
        try:
            download = self._first_mirror(path, lambda _: chunks.clear(), chunks.append, None)
        except NotFound:
            return None
        return download.url, b"".join(chunks)

    def download(
        self,
        path: str,
        out: IO[bytes],
        expected_md5: str,
        on_bytes: Callable[[int], None] | None = None,
        on_length: Callable[[int], None] | None = None,
    ) -> Download:
        """Stream `path` into `out`, verified against `expected_md5`; raise naming every failure."""

        def write(chunk: bytes) -> None:
            out.write(chunk)
            if on_bytes:
                on_bytes(len(chunk))

        def reset(length: int | None) -> None:
            out.seek(0)
            out.truncate()
            if on_length and length:
                on_length(length)

        return self._first_mirror(path, reset, write, expected_md5)

    def _first_mirror(
        self,
        path: str,
        reset: Reset,
        write: Write,
        expected_md5: str | None,
    ) -> Download:
        failures: list[str] = []
        missing = unreachable = 0
        mismatch: tuple[str, str] | None = None
        for mirror in self.urls:
            url = mirror + path
            try:
                download = self._with_retries(mirror, url, reset, write)
            except NotFound:
                missing += 1
                failures.append(f"{url}: not found")
                continue
            except _Unreachable as e:
                unreachable += 1
                failures.append(f"{url}: {e}")
                continue
            except (_Transient, _Permanent) as e:
                failures.append(f"{url}: {e}")
                continue
            if expected_md5 is None or download.md5 == expected_md5:
                return download
            mismatch = (url, download.md5)
            failures.append(f"{url}: md5 {download.md5}, expected {expected_md5}")
        name = path.rsplit("/", 1)[-1]
        if mismatch and len(failures) == 1:
            raise ChecksumError(
                f"{name}: checksum mismatch: expected md5 {expected_md5}, got {mismatch[1]} "
                f"(from {mismatch[0]})"
            )
        if not missing or missing + unreachable < len(self.urls):  # a mirror that failed may
            # be the one that has it; one that could not be reached tells nothing
            raise FetchError(f"{name}: could not download: " + "; ".join(failures))
        raise NotFound(f"{name}: not found on any mirror ({', '.join(self.urls)})")

    def _with_retries(
        self, mirror: str, url: str, reset: Reset, write: Write
    ) -> Download:
        delay = self.policy.backoff
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return self._once(mirror, url, reset, write)
            except _Transient:
                if attempt == self.policy.attempts:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _open(self, url: str, timeout: tuple[float, float]) -> requests.Response:
        """GET, following redirects only within the mirror's own scheme, host and port."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._session.get(url, stream=True, timeout=timeout,
                                         allow_redirects=False)
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            target = urljoin(url, response.headers.get("Location", ""))
            response.close()
            if _origin(target) != _origin(url):
                raise _Permanent(f"redirected to {target}; another host or scheme is not "
                                 "followed")
            url = target
        raise _Permanent(f"more than {MAX_REDIRECTS} redirects")

    def _once(
        self, mirror: str, url: str, reset: Reset, write: Write
    ) -> Download:
        import requests

        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        try:
            response = self._open(url, timeout)
        except requests.RequestException as e:
            if _no_connection(e):
                raise _Unreachable("connect timed out" if isinstance(e, requests.ConnectTimeout)
                                   else _reason(e)) from e
            raise _Transient("timed out" if isinstance(e, requests.Timeout) else _reason(e)
                             ) from e
        try:
            with response:
                status = response.status_code
                if status in (404, 410):
                    raise NotFound(url)
                if status >= 500 or status == 429:
                    raise _Transient(f"HTTP {status}")
                if status != 200:
                    raise _Permanent(f"HTTP {status}")
                length = response.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                reset(expected)
                md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
                for chunk in response.iter_content(CHUNK):
                    md5.update(chunk)
                    sha256.update(chunk)
                    size += len(chunk)
                    write(chunk)
        except requests.Timeout as e:
            raise _Transient("timed out") from e
        except requests.RequestException as e:
            raise _Transient(_reason(e)) from e
        if expected is not None and size != expected:
            raise _Transient(f"body of {size} bytes, {expected} announced")
        return Download(url, mirror, size, md5.hexdigest(), sha256.hexdigest())


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _no_connection(error: requests.RequestException) -> bool:
    """Whether no connection was made: refused, no such host, or the connect timed out
    (urllib3's `NewConnectionError` and `NameResolutionError` are `ConnectTimeoutError`s)."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError

    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, ConnectTimeoutError)


def _reason(error: requests.RequestException) -> str:
    """The innermost cause of a requests error, without the adapter's noise."""
    text = str(error)
    short = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", text)
    if short:
        got, more = int(short[1]), int(short[2])
        return f"connection closed after {got} of {got + more} bytes"
    for pattern in (r"\[Errno -?\d+\] ([^'\")]+)", r"(Connection refused)",
                    r"(Connection (?:aborted|reset)[^'\"]*)"):
        match = re.search(pattern, text)
        if match:
            return match[1].strip().rstrip(".,")
    return type(error).__name__
