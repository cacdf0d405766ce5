"""TOML files read for people: a syntax error names its line and column, and no key or string
holds a character that would end or bend a line (every problem is reported as one line).

Recipes and inventories are read through it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Characters that end or bend a line: C0, DEL, C1 and Unicode's line separators. None may be in
a value that reaches a boot config or a kernel line (a newline in `boot.append` would start a
config line of its own), nor in a path or name (every error message is one line)."""
TEMPLATE_TEXT = "\t\n"
"""What `[vars]` may hold besides printable text: their values reach only the image's files,
through the recipe's own templates, never a config or kernel line tcbuild writes."""
_CHAR_NAMES = {"\0": "NUL", "\t": "a tab", "\n": "a newline", "\r": "a carriage return",
               "\x1b": "an escape", "\x7f": "DEL"}
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def read_toml(path: Path, kind: str) -> dict[str, Any]:
    """A TOML file's tables; a syntax error names its line and column."""
    if CONTROL.search(str(path)):  # its name reaches messages and config comments
        raise InputError(f"{json.dumps(str(path))}: a {kind} file's name may not hold a control "
                         "character")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read {kind}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise InputError(_toml_error(path, e)) from e
    except RecursionError as e:  # tomllib recurses once per level of arrays or inline tables
        raise InputError(f"{path}: invalid TOML: arrays or inline tables nested too "
                         "deeply") from e


def _toml_error(path: Path, error: tomllib.TOMLDecodeError) -> str:
    message = str(error)
    where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if where:
        message = message[: where.start()]
        return f"{path}:{where[1]}:{where[2]}: invalid TOML: {message}"
    return f"{path}: invalid TOML: {message}"


def type_name(value: object) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a float", str: "a string",
        list: "an array", dict: "a table",
    }.get(type(value), type(value).__name__)


def key_path(where: str, key: str) -> str:
    """`boot` + `append` -> `boot.append`; a key that is not bare is quoted (and escaped)."""
    shown = key if BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{where}.{shown}" if where else shown


def control_characters(data: Mapping[str, Any], allowed: Mapping[str, str] | None = None
                       ) -> Iterator[tuple[str, str]]:
    """(key path, problem) for every key and string of parsed TOML holding a control character.

    `allowed` maps a top-level table to the control characters its values may hold.
    """
    for key, value in data.items():
        yield from _controls({key: value}, "", (allowed or {}).get(key, ""))


def _controls(value: Any, where: str, extra: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            path = key_path(where, key)
            found = CONTROL.search(key)
            if found:
                yield path, f"the key holds {_char(found[0])}; {_REFUSED}"
            yield from _controls(item, path, extra)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _controls(item, f"{where}[{i}]", extra)
    elif isinstance(value, str):
        problem = control_problem(value, extra)
        if problem:
            yield where, problem


def control_problem(text: str, allowed: str = "") -> str | None:
    """The first control character of `text` not in `allowed`, described; None if none."""
    found = next((c for c in CONTROL.finditer(text) if c[0] not in allowed), None)
    if found is None:
        return None
    rule = ("template values may hold tabs and newlines, no other control character" if allowed
            else _REFUSED)
    return f"{_char(found[0])} at character {found.start() + 1}; {rule}"


_REFUSED = ("control characters are refused (in a boot config or a kernel line they would "
            "break the line)")


def _char(c: str) -> str:
    name = _CHAR_NAMES.get(c, "a control character")
    return f"{name} (U+{ord(c):04X})"
