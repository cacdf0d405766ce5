"""`tcbuild fleet --serve`: the fleet report over HTTP, kept current, read-only.

`app(follower)` is a WSGI application with three pages, each read afresh from the files on
every request (only what the logs gained since the last one, see `follow`):

    /            the page (`page`): HTML and SVG, no script, refreshing itself
    /api/fleet   `FleetReport.as_json()`, what `fleet --json` prints, byte for byte
    /metrics     Prometheus' text format (`metrics`)

Anything else is 404, a method other than GET or HEAD 405. Nothing is written, no file is
served as it is. A failure to read (a log directory gone, a damaged release.json) is a 503
with its one line. `serve(...)` runs the stdlib's threading WSGI server on an address (the
loopback by default) until SIGINT or SIGTERM.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..errors import InputError, TcbuildError
from .follow import Follower

log = logging.getLogger("tcbuild")

DEFAULT_HOST = "127.0.0.1"
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def app(follower: Follower) -> App:
    """The WSGI application over `follower`'s files."""
    from . import metrics, page

    def api() -> tuple[bytes, str]:
        shown = json.dumps(follower.report().as_json(), indent=1) + "\n"
        return shown.encode(), "application/json"

    def html() -> tuple[bytes, str]:
        return page.page(follower.report()), "text/html; charset=utf-8"

    last: list[Any] = [None, None, b""]  # the report and errors last exposed, and the text

    def scrape() -> tuple[bytes, str]:
        found, errors = follower.read()
        if [found, errors] != last[:2]:  # nothing changed: the same text, not made again
            last[:] = [found, errors, metrics.exposition(found, errors)]
        return last[2], metrics.CONTENT_TYPE

    routes: dict[str, Callable[[], tuple[bytes, str]]] = {
        "/": html, "/api/fleet": api, "/metrics": scrape}

    def application(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        route = routes.get(path)
        if route is None:
            return _text(start, "404 Not Found", f"{path}: no such page (/, /api/fleet, "
                         "/metrics)", method)
        if method not in ("GET", "HEAD"):
            return _text(start, "405 Method Not Allowed", f"{method}: only GET and HEAD",
                         method, [("Allow", "GET, HEAD")])
        try:
            body, kind = route()
        except TcbuildError as e:
            log.warning("%s: %s", path, e)
            return _text(start, "503 Service Unavailable", str(e), method)
        except Exception as e:  # noqa: BLE001 - a request never takes the server down
            log.error("%s: %s: %s", path, type(e).__name__, e)
            return _text(start, "500 Internal Server Error", "internal error", method)
        start("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body))),
                         ("Cache-Control", "no-store")])
        return [b""] if method == "HEAD" else [body]

    return application


def _text(start: StartResponse, status: str, text: str, method: str,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (text.replace("\n", " ") + "\n").encode()
    start(status, [("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body))), *(headers or [])])
    return [b""] if method == "HEAD" else [body]


def address(text: str) -> tuple[str, int]:
    """`[ADDR:]PORT` (an IPv6 address in brackets) -> (address, port); the loopback by
    default."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"--serve {text}: not [ADDR:]PORT (a port 0..65535; 0: any free one)")
    return host, int(port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # no line per request on stderr


def serve(follower: Follower, host: str, port: int, started: Callable[[str], None]) -> None:
    """Serve `app(follower)` on host:port until SIGINT or SIGTERM; `started` gets the URL
    once it listens. A port that cannot be had is a TcbuildError."""
    server_class = _Server6 if ":" in host else _Server
    try:
        httpd = make_server(host, port, app(follower), server_class=server_class,
                            handler_class=_Quiet)
    except OSError as e:
        raise TcbuildError(f"--serve {host}:{port}: cannot listen there "
                           f"({e.strerror or e})") from e
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set())
                for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    try:
        shown = f"[{host}]" if ":" in host else host
        started(f"http://{shown}:{httpd.server_address[1]}/")
        threading.Thread(target=_warm, args=(follower,), daemon=True).start()
        while not stop.wait(1.0):
            pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _warm(follower: Follower) -> None:
    """The first reading of every file, done while the server already answers."""
    try:
        follower.report()
    except TcbuildError as e:
        log.warning("%s", e)
