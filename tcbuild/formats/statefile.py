"""Reading tcbuild's own JSON files (build.json, release.json, lock files, cache refs).

Each reader turns a file into a frozen dataclass through `Fields`, which checks every value it
hands out: a file that is not JSON, a missing key, a value of the wrong kind, each is one line
naming the file and the key path (`build/x/build.json: outputs.initrd.sha256: missing`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NoReturn

from ..errors import StateError, TcbuildError

SHA256 = re.compile(r"[0-9a-f]{64}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.@+-]+")


class Fields:
    """A JSON object from a state file; each getter checks its value or fails naming it."""

    def __init__(self, data: object, file: str, path: str = "",
                 error: type[TcbuildError] = StateError) -> None:
        self.file, self.path, self.error = file, path, error
        if not isinstance(data, dict):
            self._fail(path, f"not a JSON object (got {_kind(data)})")
        self.data: dict[str, object] = data

    @classmethod
    def read(cls, path: Path, error: type[TcbuildError] = StateError) -> Fields:
        """The file's object; a missing file raises FileNotFoundError (the caller decides
        whether that matters), anything else unreadable is `error`."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError) as e:
            what = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
            raise error(f"{path}: cannot read: {what}") from e
        return cls.parse(text, str(path), error)

    @classmethod
    def parse(cls, text: str, file: str, error: type[TcbuildError] = StateError) -> Fields:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise error(f"{file}: not a JSON file ({str(e).splitlines()[0]})") from None
        return cls(data, file, "", error)

    def _where(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        name = key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)
        return f"{self.path}.{name}" if self.path else name

    def _fail(self, where: str, what: str) -> NoReturn:
        raise self.error(f"{self.file}: {where}: {what}" if where else f"{self.file}: {what}")

    def fail(self, key: str, what: str) -> NoReturn:
        """Report a bad value found under `key` (checked by the caller)."""
        self._fail(self._where(key), what)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> object:
        if key not in self.data:
            self.fail(key, "missing")
        return self.data[key]

    def string(self, key: str, default: str | None = None) -> str:
        if default is not None and key not in self.data:
            return default
        value = self.raw(key)
        if not isinstance(value, str):
            self.fail(key, f"not a string (got {_kind(value)})")
        return value

    def number(self, key: str, minimum: int = 0) -> int:
        value = self.raw(key)
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"not a whole number (got {_kind(value)})")
        if value < minimum:
            self.fail(key, f"must be at least {minimum} (got {value})")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            self.fail(key, f"not true or false (got {_kind(value)})")
        return value

    def sha256(self, key: str) -> str:
        value = self.string(key)
        if not SHA256.fullmatch(value):
            self.fail(key, "not a sha256 (64 lowercase hex digits)")
        return value

    def name(self, key: str) -> str:
        """A plain file name: not empty, no `/`, not `.` or `..`, no control characters."""
        value = self.string(key)
        if not is_plain_name(value):
            self.fail(key, "not a plain file name")
        return value

    def obj(self, key: str) -> Fields:
        return Fields(self.raw(key), self.file, self._where(key), self.error)

    def table(self, key: str) -> dict[str, Fields]:
        """An object of objects, by key."""
        inner = self.obj(key)
        return {k: inner.obj(k) for k in inner.data}

    def strings(self, key: str) -> dict[str, str]:
        """An object of strings, by key."""
        inner = self.obj(key)
        return {k: inner.string(k) for k in inner.data}

    def array(self, key: str) -> list[object]:
        value = self.raw(key)
        if not isinstance(value, list):
            self.fail(key, f"not a list (got {_kind(value)})")
        return value

    def objects(self, key: str) -> list[Fields]:
        """A list of objects."""
        items = self.array(key)
        where = self._where(key)
        return [Fields(item, self.file, f"{where}[{i}]", self.error)
                for i, item in enumerate(items)]


def is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and all(
        ord(c) >= 32 and c != "\x7f" for c in name)


def dumps(data: object) -> bytes:
    """A state file's text: indented, sorted keys, a final newline."""
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
