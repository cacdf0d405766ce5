"""The fleet: what each node booted (`view`), read from the log host's files (`logtail`) and
the TFTP root, the whole of `tcbuild fleet` as one object (`overview`), kept current for
`fleet --serve` (`follow`, `web`, `page`, `metrics`), booting a published tree in QEMU
(`boottest`) and the small HTTP server it boots from (`httptree`).

`from tcbuild import fleet` gives the view's names (`fleet.survey`, `fleet.render`,
`fleet.State`) and `fleet.report` (`fleet --json`'s object), each loading its module on first
use.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .overview import FleetReport, report, survey
    from .view import NodeStatus, State, render

_LAZY = {"NodeStatus": ".view", "State": ".view", "render": ".view", "survey": ".overview",
         "FleetReport": ".overview", "report": ".overview"}


def __getattr__(name: str) -> Any:
    """A name of the fleet view or report, its module imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name], __name__), name)


__all__ = ["FleetReport", "NodeStatus", "State", "render", "report", "survey"]
