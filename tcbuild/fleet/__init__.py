"""The fleet: what each node booted, read from the log host and the TFTP root (`view`), booting
a published tree in QEMU (`boottest`) and the small HTTP server it boots from (`httptree`).

`from tcbuild import fleet` gives the view's names (`fleet.survey`, `fleet.render`,
`fleet.State`), each loading its module on first use.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .view import NodeStatus, State, render, survey

_VIEW = ("NodeStatus", "State", "render", "survey")


def __getattr__(name: str) -> Any:
    """A name of the fleet view, its module imported on first use."""
    if name not in _VIEW:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(".view", __name__), name)


__all__ = ["NodeStatus", "State", "render", "survey"]
