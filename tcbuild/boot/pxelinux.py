"""pxelinux configuration files: written from a recipe's boot section, read back for checks.

Only the directives tcbuild writes are understood: DEFAULT, LABEL, KERNEL, INITRD, APPEND,
SERIAL, TIMEOUT, PROMPT (and comments). Paths are relative to the TFTP root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config.recipe import DEFAULT_LABEL, Recipe
from ..errors import InputError

CONFIG_DIR = "pxelinux.cfg"


@dataclass(frozen=True)
class Label:
    name: str
    kernel: str
    initrd: str
    append: str


@dataclass(frozen=True)
class PxeConfig:
    default: str
    labels: tuple[Label, ...]
    serial: str | None = None  # e.g. "0 115200"
    timeout: int = 0  # tenths of a second; 0 boots the default at once
    prompt: bool = False

    def label(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(name)


def for_recipe(recipe: Recipe, kernel: str, initrd: str, append: str | None = None) -> PxeConfig:
    """The recipe's boot section as a config booting `kernel` + `initrd` (paths as served).

    `append` replaces the recipe's kernel line for the default label (an inventory group's).
    """
    labels = [Label(DEFAULT_LABEL, kernel, initrd, recipe.append if append is None else append)]
    labels += [Label(name, kernel, initrd, line) for name, line in recipe.labels.items()]
    return PxeConfig(DEFAULT_LABEL, tuple(labels), recipe.serial, recipe.timeout, recipe.prompt)


def mac_config_name(mac: str) -> str:
    """`52:54:00:12:34:56` -> `01-52-54-00-12-34-56` (ARP type 1, Ethernet), as pxelinux asks."""
    return "01-" + mac.lower().replace(":", "-")


def render(config: PxeConfig, comment: str = "") -> str:
    lines = [f"# {line}" for line in comment.splitlines()]
    if config.serial:
        lines.append(f"SERIAL {config.serial}")
    lines += [f"DEFAULT {config.default}", f"TIMEOUT {config.timeout}",
              f"PROMPT {1 if config.prompt else 0}"]
    for label in config.labels:
        lines += ["", f"LABEL {label.name}", f"    KERNEL {label.kernel}",
                  f"    INITRD {label.initrd}"]
        if label.append:
            lines.append(f"    APPEND {label.append}")
    return "\n".join(lines) + "\n"


def parse(text: str, source: str) -> PxeConfig:
    """A config tcbuild wrote; anything else is an `InputError` naming the line."""
    default = None
    serial = None
    timeout = 0
    prompt = False
    labels: list[dict[str, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\w+)(?:\s+(.*))?", line)
        if not match:
            raise InputError(f"{source}:{number}: cannot read '{line}'")
        keyword, value = match[1].upper(), (match[2] or "").strip()
        if keyword == "LABEL":
            labels.append({"name": value})
        elif keyword in ("KERNEL", "INITRD", "APPEND"):
            if not labels:
                raise InputError(f"{source}:{number}: {keyword} before any LABEL")
            labels[-1][keyword.lower()] = value
        elif keyword == "DEFAULT":
            default = value
        elif keyword == "SERIAL":
            serial = value
        elif keyword == "TIMEOUT" and value.isdigit():
            timeout = int(value)
        elif keyword == "PROMPT" and value in ("0", "1"):
            prompt = value == "1"
        else:
            raise InputError(f"{source}:{number}: unknown or malformed directive '{line}'")
    if default is None:
        raise InputError(f"{source}: no DEFAULT label")
    parsed = []
    for label in labels:
        if "kernel" not in label or "initrd" not in label:
            raise InputError(f"{source}: LABEL {label['name']} needs KERNEL and INITRD")
        parsed.append(Label(label["name"], label["kernel"], label["initrd"],
                            label.get("append", "")))
    config = PxeConfig(default, tuple(parsed), serial, timeout, prompt)
    try:
        config.label(default)
    except KeyError:
        raise InputError(f"{source}: DEFAULT {default} names no LABEL") from None
    return config
