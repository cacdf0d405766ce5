"""`tcbuild rollout`: a new release reaches the recipe's hosts wave by wave, each wave proven
healthy from the log host, a failed wave switched back by itself.

Build and stage the release in every root (no config switched); record the rollout in every
root (`tcbuild/rollout.json`); then per wave: switch the hosts' per-MAC configs (and iPXE twins)
to the release, drain each host (`--drain-command`), power-cycle it, wait until the log host
shows it booted the new build and stayed healthy. A failed wave's hosts (and earlier waves',
unless `keep_done`) go back to what they ran, are power-cycled and waited for. After the last
wave, `default` boots the release and per-MAC configs equal to it are dropped. Every step is
recorded before it is taken: `resume` continues a killed rollout, `abort` undoes it.

A root may be remote (`ssh://...`, `stages.remote`): each step locks every root, changes the
local ones and the remote ones' mirrors, and pushes the mirrors in two phases; no lock is held
between steps (while a node boots), so `fleet`, `releases` and `verify` read the roots meanwhile.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..boot.pxelinux import CONFIG_DIR, mac_config_name, parse
from ..config.inventory import Host, Inventory
from ..config.inventoryfile import load_inventory
from ..config.recipe import Recipe
from ..errors import InputError, TcbuildError, boundary
from ..fleet import health, overview, view
from ..fleet.power import Action, power, targets
from ..fleet.rollout import DEFAULT_WAVES, Power, describe, hosts_of, plan_waves
from ..tftproot import rollout as record
from ..tftproot import writing
from ..tftproot.rollout import HostRecord, HostState, Phase, Rollout
from . import remote
from .build import BuildOptions
from .publish import publish_all

Say = Callable[[str], None]


@dataclass(frozen=True)
class RolloutOptions:
    waves: str = DEFAULT_WAVES
    canary: str | None = None
    healthy_for: float = 60.0
    boot_timeout: float = 600.0
    drain_command: str | None = None  # a template: {name} {mac} {ip}
    drain_timeout: float = 600.0
    keep_done: bool = False
    manual_reboot: bool = False
    poll: float = 2.0  # seconds between looks at the logs (and drain attempts)


@dataclass(frozen=True)
class RolloutOutcome:
    release: str
    lines: tuple[str, ...]  # the dry run's plan, or what was done
    rollout: Rollout | None


def run_template(template: str, host: Host, cwd: Path | None = None
                 ) -> subprocess.CompletedProcess[str]:
    """Run a command template (`--drain-command`): its words split as a shell would, each
    placeholder (`{name}`, `{mac}`, `{ip}`) filled, no shell; run in `cwd`."""
    values = {"name": host.name, "mac": host.mac, "ip": str(host.ip)}
    try:
        argv = [word.format_map(values) for word in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(f"--drain-command {template!r}: {e} is not one of {{name}}, {{mac}}, "
                         "{ip}") from None
    if not argv:
        raise InputError("--drain-command: empty")
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise InputError(f"--drain-command {template!r}: cannot run {argv[0]!r} "
                         f"({e.strerror or e})") from None


class InventoryPower:
    """The inventory's power control (`fleet.power`: each host's BMC or power_command)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def missing(self, hosts: Sequence[Host]) -> list[str]:
        """The hosts without a BMC or power_command; for the others, whatever keeps their
        power out of reach (a password file others may read, ...) is bad input at once."""
        missing = [h.name for h in hosts if h.power is None]
        if not missing:
            targets(self.inventory, [h.name for h in hosts])
        return missing

    def cycle(self, host: Host) -> None:
        (result,) = power(self.inventory, [host.name], Action.CYCLE)
        if not result.ok:
            raise TcbuildError(f"power cycle failed: {result.line()}")


def power_of(inventory: Inventory) -> Power:
    """The power control of the inventory's hosts."""
    return InventoryPower(inventory)


@boundary
def rollout(recipe: Recipe, roots: Sequence[Path | str], inventory: Inventory,
            build_options: BuildOptions | None = None, logs: Path | None = None,
            options: RolloutOptions | None = None, control: Power | None = None,
            bootloader_dir: Path | None = None, dry_run: bool = False, wait: float = 30.0,
            say: Say = print) -> RolloutOutcome:
    """Build, stage and roll the recipe's release out in waves (see the module)."""
    options = options or RolloutOptions()
    roots = list(roots)
    control = control if control is not None else power_of(inventory)
    with remote.mirrored(roots, wait) as (paths, show):  # the first root, as it is now
        record.refuse_unfinished(paths, "rollout")
        first = paths[0]
        default_text = _text(first / CONFIG_DIR / "default")
        default_where = show(str(first / CONFIG_DIR / "default"))
        before = {h.name: (_named(first, h), _text(first / CONFIG_DIR / mac_config_name(h.mac)))
                  for h in inventory.hosts}
    logs = logs if logs is not None else Path(inventory.cluster.log_dir)
    hosts = hosts_of(recipe.path, inventory)
    if not hosts:
        raise InputError(f"{inventory.path}: no host boots {recipe.path}")
    waves = plan_waves(hosts, options.waves, options.canary)
    if not options.manual_reboot:
        missing = control.missing(hosts)
        if missing:
            raise InputError("\n".join(
                f"{inventory.path}: host {name}: no bmc and no power_command to power-cycle it "
                "(or give --manual-reboot)" for name in missing))
    if not logs.is_dir() and not dry_run:  # a dry run reads no log
        raise InputError(f"{logs}: no such log directory")
    plans = publish_all(recipe, roots, build_options, inventory, bootloader_dir=bootloader_dir,
                        dry_run=dry_run, wait=wait, switch=False, what="rollout")
    plan = plans[0]
    named = {h.name: before[h.name][0] for h in hosts}
    owns_default = "default" in plan.configs
    if plan.unchanged:
        return RolloutOutcome(plan.release_id, (f"release {plan.release_id} is already "
                                                "published and current: nothing to roll out",),
                              None)
    if dry_run:
        return RolloutOutcome(plan.release_id, tuple(describe(
            waves, plan.release_id, named, options.drain_command is not None,
            options.manual_reboot, owns_default)), None)
    if default_text is None:
        raise InputError(f"{default_where}: missing; a tree's first release goes in with "
                         "`tcbuild publish`")
    state = Rollout(
        plan.release_id, plan.release.build_id, tuple(tuple(h.name for h in w) for w in waves),
        {h.name: HostRecord(mac_config_name(h.mac), before[h.name][1], named[h.name])
         for h in hosts},
        {mac_config_name(h.mac): plan.configs.get(mac_config_name(h.mac),
                                                  plan.configs.get("default", ""))
         for h in hosts} | ({"default": plan.configs["default"]} if owns_default else {}),
        default_text, owns_default, str(recipe.path), str(inventory.path), str(logs),
        _options_json(options))
    return Runner(roots, inventory, state, options, control, say, wait).run()


@boundary
def resume(roots: Sequence[Path | str], control: Power | None = None, abort: bool = False,
           say: Say = print, wait: float = 30.0, poll: float | None = None) -> RolloutOutcome:
    """Continue (or, `abort`, undo) the rollout recorded in the roots."""
    roots = list(roots)
    with remote.mirrored(roots, wait) as (paths, show):
        state = record.read(paths[0])
        where = show(str(paths[0] / record.ROLLOUT))
    if state is None:
        raise InputError(f"{where}: no rollout recorded")
    if state.phase.finished:
        raise InputError(f"{where}: the rollout of release {state.release} is {state.phase} "
                         "already")
    inventory = load_inventory(state.inventory)
    saved = state.options
    options = RolloutOptions(**{k: saved[k] for k in saved
                                if k in RolloutOptions.__dataclass_fields__})
    if poll is not None:
        options = replace(options, poll=poll)
    hosts = [h for h in inventory.hosts if h.name in state.hosts]
    control = control if control is not None else power_of(inventory)
    if not options.manual_reboot:
        missing = control.missing(hosts)
        if missing:
            raise InputError("\n".join(
                f"{inventory.path}: host {name}: no bmc and no power_command to power-cycle it"
                for name in missing))
    runner = Runner(roots, inventory, state, options, control, say, wait)
    if abort:
        runner.state = replace(state, phase=Phase.REVERTING,
                               failure=(*state.failure, "aborted"))
        return runner.revert(every=True, final=Phase.ABORTED)
    return runner.run()


class Runner:
    """The rollout's loop over its recorded state; every change is recorded before it acts."""

    def __init__(self, roots: Sequence[Path | str], inventory: Inventory, state: Rollout,
                 options: RolloutOptions, power: Power | None, say: Say, wait: float) -> None:
        self.local, self.remotes = remote.split_roots(roots)
        self.state, self.options, self.power = state, options, power
        self.say, self.wait = say, wait
        self.hosts = {h.name: h for h in inventory.hosts}
        self.logs = Path(state.logs)
        self.game_tag = inventory.cluster.game_log_tag
        self.build_id = state.build_id
        self.cwd = inventory.path.parent  # where commands run, as for power_command

    def save(self, state: Rollout) -> None:
        self.state = state
        with self.changing() as roots:
            for root in roots:
                record.write(root, state)

    @contextlib.contextmanager
    def changing(self) -> Iterator[list[Path]]:
        """Every root locked (in one order), a remote one pulled into its mirror; what the
        block changes in the mirrors is pushed to the remote roots in two phases after it."""
        with contextlib.ExitStack() as held:
            far = held.enter_context(remote.sessions(self.remotes, self.wait))
            roots = self.local + [session.mirror for session in far]
            for root in sorted(roots, key=lambda r: str(r.resolve())):
                held.enter_context(writing.locked(root, self.wait))
            yield roots
            remote.push_all(far)

    def run(self) -> RolloutOutcome:
        if self.state.phase is Phase.REVERTING:
            return self.revert(every=not self.options.keep_done, final=Phase.FAILED)
        self.save(self.state)
        while self.state.wave < len(self.state.waves):
            index = self.state.wave
            wave = self.state.waves[index]
            self.say(f"wave {index + 1} of {len(self.state.waves)}: {', '.join(wave)}")
            started = time.monotonic()
            failed = self.roll(wave, self.build_id, back=False)
            if failed:
                self.save(replace(self.state, phase=Phase.REVERTING, failure=tuple(
                    f"{name}: {self.state.hosts[name].note}" for name in failed)))
                return self.revert(every=not self.options.keep_done, final=Phase.FAILED)
            self.say(f"wave {index + 1}: healthy in {time.monotonic() - started:.0f} s")
            self.save(replace(self.state, wave=index + 1))
        self.finish()
        return RolloutOutcome(self.state.release, (f"release {self.state.release} rolled out to "
                                            f"{len(self.state.hosts)} host(s)",), self.state)

    def switch(self, texts: dict[str, str]) -> None:
        with self.changing() as roots:
            for root in roots:
                writing.put_configs(root, texts)

    def roll(self, wave: Sequence[str], build_id: str, back: bool) -> list[str]:
        """Switch, drain, power-cycle the wave's hosts and wait for them; the names failed.
        `back`: to what they ran before (no drain; booting the old build is enough)."""
        done = HostState.REVERTED if back else HostState.HEALTHY
        todo = [n for n in wave if self.state.hosts[n].state is not done]
        moving = (HostState.REVERTING,) if back else (HostState.REBOOTING, HostState.BOOTED)
        for name in todo:  # each host's config switched as its turn comes, recorded first
            host = self.state.hosts[name]
            if host.state in moving and host.cycled:
                continue  # cycled before the rollout was killed: wait for it
            draining = bool(self.options.drain_command) and not back
            self.save(self.state.host(name, state=HostState.DRAINING if draining
                                      else moving[0], cycled=None))
            self.switch({host.config: self.back_text(name) if back
                         else self.state.configs[host.config]})
            if draining:
                if not self.drain(self.hosts[name]):
                    self.save(self.state.host(
                        name, state=HostState.FAILED,
                        note=f"drain did not succeed within {self.options.drain_timeout:g} s"))
                    return [name]
                self.save(self.state.host(name, state=moving[0]))
            at = time.time()  # lines the log host receives from now on count
            try:
                self.cycle(self.hosts[name])
            except TcbuildError as e:  # a BMC that does not answer: the wave fails
                self.save(self.state.host(name, state=HostState.FAILED, cycled=at,
                                          note=str(e)))
                return [name]  # the hosts cycled before it are switched back with it
            self.save(self.state.host(name, cycled=at))
        return self.wait_for(todo, build_id, not back, done)

    def back_text(self, name: str) -> str:
        """The per-MAC config that boots what the host ran before."""
        host = self.state.hosts[name]
        text = host.before or self.state.default_before
        if text is None:
            raise TcbuildError(f"{name}: nothing recorded to switch it back to")
        return text

    def drain(self, host: Host) -> bool:
        deadline = time.monotonic() + self.options.drain_timeout
        assert self.options.drain_command is not None
        while True:
            result = run_template(self.options.drain_command, host, self.cwd)
            if result.returncode == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            self.say(f"{host.name}: busy (drain command exit {result.returncode}); retrying")
            time.sleep(self.options.poll)

    def cycle(self, host: Host) -> None:
        if self.options.manual_reboot or self.power is None:
            self.say(f"{host.name}: reboot it now ({host.ip}, {host.mac}); waiting for it")
        else:
            self.power.cycle(host)

    def wait_for(self, names: Sequence[str], build_id: str, need_game: bool,
                 done: HostState) -> list[str]:
        waiting, failed = list(names), []
        while waiting:
            for name in list(waiting):
                host = self.state.hosts[name]
                verdict = health.look(self.logs, self.hosts[name], host.cycled or 0.0, build_id,
                                      self.game_tag, self.options.healthy_for,
                                      self.options.boot_timeout, need_game)
                if verdict.health is health.Health.HEALTHY:
                    self.save(self.state.host(name, state=done))
                    waiting.remove(name)
                elif verdict.health is health.Health.FAILED:
                    self.save(self.state.host(name, state=HostState.FAILED,
                                              note=f"{verdict.note}; {verdict.seen()}"))
                    waiting.remove(name)
                    failed.append(name)
                elif verdict.health is health.Health.BOOTED and host.state is not \
                        HostState.BOOTED:
                    self.save(self.state.host(name, state=HostState.BOOTED))
            if waiting:
                time.sleep(self.options.poll)
        return failed

    def revert(self, every: bool, final: Phase) -> RolloutOutcome:
        """Switch back and power-cycle every touched host (of the failed wave only, unless
        `every`), wait until each is back on its old build; then record `final`. A host
        switched but never power-cycled (drained only) is switched back alone."""
        touched = [n for n, h in self.state.hosts.items()
                   if h.state not in (HostState.PENDING, HostState.REVERTED)
                   and (every or h.state is not HostState.HEALTHY)]
        stuck = []
        for name in touched:  # one by one: each may go back to another release
            host = self.state.hosts[name]
            if host.state is not HostState.REVERTING:
                if host.cycled is None and host.state in (HostState.DRAINING, HostState.FAILED):
                    self.switch({host.config: self.back_text(name)})
                    self.save(self.state.host(name, state=HostState.REVERTED))
                    continue
                self.save(self.state.host(name, state=HostState.REVERTING, cycled=None))
            old = host.old_release or ""
            build = view.RELEASE_BUILD.search(old)
            stuck += self.roll([name], build[1] if build else old, back=True)
        with self.changing() as roots:
            for root in roots:
                writing.drop_configs(root, [h.config for n, h in self.state.hosts.items()
                                            if n in touched and h.before is None])
        lines = [*self.state.failure, *(f"{n}: not back on its old release "
                                        f"({self.state.hosts[n].note})" for n in stuck)]
        self.save(replace(self.state, phase=final, failure=tuple(lines)))
        if final is Phase.ABORTED and not stuck:
            return RolloutOutcome(self.state.release, tuple(f"{n}: reverted" for n in touched),
                           self.state)
        raise TcbuildError("\n".join(f"rollout of {self.state.release}: {line}"
                                     for line in lines))

    def finish(self) -> None:
        """`default` boots the release; per-MAC configs the rollout made that equal it go."""
        if self.state.owns_default:
            default = self.state.configs["default"]
            self.switch({"default": default})
            wanted = parse(default, "default")
            with self.changing() as roots:
                for root in roots:
                    writing.drop_configs(root, [
                        h.config for h in self.state.hosts.values() if h.before is None
                        and parse(self.state.configs[h.config], h.config) == wanted])
        self.save(replace(self.state, phase=Phase.DONE))


def _named(root: Path, host: Host) -> str | None:
    named = overview.pxe_release(root, host, {})
    return named.release if named else None


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _options_json(options: RolloutOptions) -> dict[str, object]:
    return {k: getattr(options, k) for k in RolloutOptions.__dataclass_fields__}
