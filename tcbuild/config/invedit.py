"""The inventory rewritten for `enroll` and `retire`, keeping the operator's file as it is.

A new host is one `[[host]]` table added at the end, in the layout of the example (keys
aligned); a retired host's table goes with its comments; nothing else in the file changes:
comments, order, spacing and quoting stay (round-trip TOML through `tomlkit`, imported only
here, so `import tcbuild` stays light). The new text is written beside the file and read back
with the normal reader; only when it validates does it replace the file (atomically).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..atomic import commit, sweep, temp_file
from ..errors import InputError, RecipeError, TcbuildError
from .allocate import NewHost
from .inventory import Inventory
from .inventoryfile import load_inventory


def table_text(host: NewHost) -> str:
    """`[[host]]` with its keys aligned, as examples/cluster.toml writes them."""
    import tomlkit

    keys = host.table()
    width = max(map(len, keys))
    rows = [f"{key:<{width}} = {tomlkit.string(value).as_string()}" for key, value in keys.items()]
    return "[[host]]\n" + "".join(f"{row}\n" for row in rows)


def with_hosts(path: Path, text: str, hosts: Sequence[NewHost]) -> str:
    """`text` with a `[[host]]` table for each of `hosts` added at its end."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    if not text.endswith("\n"):
        text += "\n"
    new = text + "".join(f"\n{table_text(host)}" for host in hosts)
    try:
        parsed = tomlkit.parse(new).unwrap()
    except TOMLKitError as e:  # `host = [...]` written inline: tables cannot follow
        raise InputError(f"{path}: host: cannot add a [[host]] table after it ({e})") from e
    before = tomlkit.parse(text).unwrap().get("host", [])
    if parsed.get("host") != [*before, *(h.table() for h in hosts)]:
        raise InputError(f"{path}: host: cannot add a [[host]] table at the end of the file")
    return new


def without_host(path: Path, text: str, name: str) -> str:
    """`text` without the `[[host]]` table named `name` (its own comments go with it)."""
    import tomlkit

    document = tomlkit.parse(text)
    tables: Any = document.get("host", [])
    for i, table in enumerate(tables):
        if isinstance(table, dict) and str(table.get("name", "")).lower() == name.lower():
            del tables[i]
            if not tables:
                del document["host"]
            new = tomlkit.dumps(document)
            if new.endswith("\n\n") and not text.endswith("\n\n"):  # the blank line before
                new = new.rstrip("\n") + "\n"  # the last table stays with the one above
            return new
    raise InputError(f"{path}: no [[host]] table named {name!r}")


@contextlib.contextmanager
def staged(path: Path, text: str) -> Iterator[Inventory]:
    """The inventory `text` would be, validated by the normal reader from a file beside `path`;
    it replaces `path` when the block ends without an error, else `path` stays as it was."""
    sweep(path.parent, f".{path.name}.")
    with temp_file(path.parent, f".{path.name}.") as (f, temp):
        f.write(text.encode())
        f.flush()
        try:
            inventory = load_inventory(temp)
        except RecipeError as e:
            raise RecipeError([line.replace(str(temp), str(path)) for line in e.lines]) from e
        except TcbuildError as e:
            raise InputError(str(e).replace(str(temp), str(path))) from e
        yield dataclasses.replace(inventory, path=path)
        mode = path.stat().st_mode & 0o7777
        commit(f, temp, path, mode, path.stat())
