"""A published tree served read-only over HTTP on loopback, as any static web server would.

boot-test's HTTP path: QEMU's user-mode network lets the guest reach the host's loopback as
10.0.2.2, so the node fetches boot.ipxe, its script, kernel and initrd from here. Only files
inside the tree are served (no directory listings, no symlink out of it); every request is
recorded, so a test can tell which script a node asked for.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import TcbuildError


class TreeServer:
    """`with TreeServer(root) as server:` serves `root` at `server.url` until the block ends."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        if not root.is_dir():
            raise TcbuildError(f"{root}: the tree to serve does not exist")
        self.root = root.resolve()
        self.requests: list[tuple[str, int]] = []  # (path, status), in order
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _handler(self) -> type[SimpleHTTPRequestHandler]:
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(server.root), **kwargs)

            def send_head(self) -> Any:
                path = unquote(urlsplit(self.path).path)
                target = (server.root / path.lstrip("/")).resolve()
                if not target.is_relative_to(server.root) or not target.is_file():
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return None
                return super().send_head()

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                with server._lock:
                    server.requests.append((unquote(urlsplit(self.path).path),
                                            int(code) if str(code).isdigit() else 0))

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # no stderr noise; `requests` has what was asked

        return Handler

    def __enter__(self) -> TreeServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
