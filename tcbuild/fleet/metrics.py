"""`fleet --serve`'s /metrics: the fleet report in Prometheus' text format.

A collector of its own over one report, in a registry of its own (no global metrics):

    tcbuild_node_info{host,build,release,state}    1 per host (build, release "" while it
                                                   said nothing; state as `fleet` shows it)
    tcbuild_node_current{host}                     1 when it booted the release it should
    tcbuild_node_boot_timestamp_seconds{host}      when its last boot line was received
    tcbuild_node_boot_duration_seconds{host}       the kernel's uptime on that line
    tcbuild_node_last_seen_timestamp_seconds{host} its last line
    tcbuild_node_errors_total{host}                error lines appended to its -err.log since start
    tcbuild_release_info{release,build}            1 per release in the tree
    tcbuild_release_configs{release}               the configs that boot it
    tcbuild_new_machines                           machines waiting to be enrolled
    tcbuild_rollout_wave, tcbuild_rollout_waves    the rollout's wave, of how many (if any)
    tcbuild_rollout_host_state{host,state}         1 per host of the rollout

prometheus_client is imported here only, when /metrics is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .overview import FleetReport
from .rollout import fleet_view
from .view import State

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def families(report: FleetReport, errors: Mapping[str, int]) -> Iterator[Metric]:
    """The report's metric families; `errors`: error lines appended per host since the
    follower started."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=list(labels))

    info = gauge("tcbuild_node_info", "The build and release a node last booted (empty when "
                 "it did not say) and its state (current, stale, unknown, never seen)",
                 ("host", "build", "release", "state"))
    current = gauge("tcbuild_node_current", "1 when the node booted the release its pxelinux "
                    "config names, else 0", ("host",))
    booted = gauge("tcbuild_node_boot_timestamp_seconds", "When the log host received the "
                   "node's last boot line (Unix time)", ("host",))
    duration = gauge("tcbuild_node_boot_duration_seconds", "The kernel's uptime on the node's "
                     "last boot line: how long its boot took", ("host",))
    seen = gauge("tcbuild_node_last_seen_timestamp_seconds", "When the log host received the "
                 "node's last line (Unix time)", ("host",))
    failed = CounterMetricFamily("tcbuild_node_errors", "Error lines appended to the node's "
                                 "-err.log since the server started", labels=["host"])
    for n in report.hosts:
        boot = n.boot
        info.add_metric([n.name, boot.build if boot else "",
                         (boot.release or "") if boot else "", str(n.state).lower()], 1)
        current.add_metric([n.name], 1 if n.state is State.CURRENT else 0)
        if boot is not None:
            booted.add_metric([n.name], boot.time.timestamp())
            if boot.seconds is not None:
                duration.add_metric([n.name], boot.seconds)
        if n.seen is not None:
            seen.add_metric([n.name], n.seen.timestamp())
        failed.add_metric([n.name], errors.get(n.name, 0))
    yield from (info, current, booted, duration, seen, failed)
    release = gauge("tcbuild_release_info", "A release in the TFTP root, by its build",
                    ("release", "build"))
    configs = gauge("tcbuild_release_configs", "The pxelinux configs (and iPXE twins) that "
                    "boot the release", ("release",))
    for r, names in report.releases:
        release.add_metric([r.id, r.build_id[:12]], 1)
        configs.add_metric([r.id], len(names))
    new = gauge("tcbuild_new_machines", "Machines waiting to be enrolled, borne out by a lease")
    new.add_metric([], len(report.new))
    yield from (release, configs, new)
    if report.rollout is not None:
        yield from _rollout(fleet_view(report.rollout), gauge)


def _rollout(shown: Mapping[str, Any], gauge: Any) -> Iterator[Metric]:
    wave = gauge("tcbuild_rollout_wave", "The rollout's wave under way (or the last one)",
                 ("release", "phase"))
    wave.add_metric([shown["release"], shown["phase"]], shown["wave"])
    waves = gauge("tcbuild_rollout_waves", "The rollout's number of waves", ("release",))
    waves.add_metric([shown["release"]], shown["waves"])
    hosts = gauge("tcbuild_rollout_host_state", "1 for each host of the rollout, by its state",
                  ("host", "state"))
    for name, host in shown["hosts"].items():
        hosts.add_metric([name, host["state"]], 1)
    yield from (wave, waves, hosts)


def exposition(report: FleetReport, errors: Mapping[str, int]) -> bytes:
    """The report in Prometheus' text format, through a registry of its own."""
    from prometheus_client import CollectorRegistry, generate_latest

    class Collector:
        def collect(self) -> Iterator[Metric]:
            return families(report, errors)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry)
