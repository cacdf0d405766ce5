"""Secrets in an image: TFTP serves every file to anyone on the network, without a password."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable

from ..formats.newc import Entry

PRIVATE_KEY = re.compile(rb"-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED) )?PRIVATE KEY-----")
LOCKED = ("", "*", "!", "!!", "x")


def find_secrets(entries: Iterable[Entry], marked: Iterable[str] = ()) -> list[str]:
    """One line per file that must not be served: private keys, password hashes, marked files."""
    marked = set(marked)
    found = []
    for entry in entries:
        if not stat.S_ISREG(entry.mode) or not entry.data and entry.path not in marked:
            continue
        data = entry.data or b""
        if entry.path in marked:
            found.append(f"/{entry.path}: marked secret in the recipe")
        elif PRIVATE_KEY.search(data):
            found.append(f"/{entry.path}: holds a private key")
        elif entry.path in ("etc/shadow", "etc/gshadow") or entry.path.endswith("/shadow"):
            users = [line.split(b":")[0].decode("utf-8", "replace")
                     for line in data.splitlines()
                     if len(line.split(b":")) > 1
                     and line.split(b":")[1].decode("utf-8", "replace") not in LOCKED
                     and not line.split(b":")[1].startswith(b"!")]
            if users:
                found.append(f"/{entry.path}: password hashes for {', '.join(users)}")
    return found
