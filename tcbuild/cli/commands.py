"""The `tcbuild` command: each command calls one library function and prints its result.

The arguments are `grammar`'s; a `TcbuildError` is printed as its lines (a traceback only with
`--debug`) and decides the exit status. Each command imports what it uses, so a command loads
only its own part of the library (`tcbuild build` on an unchanged recipe starts in a blink).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import InputError, TcbuildError
from ..progress import ProgressBar, format_size
from . import grammar, operate

if TYPE_CHECKING:
    from ..config.recipe import Recipe
    from ..sources.inputs import FetchOptions


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit 0 on success, 1 on a failure, 2 on bad input."""
    args = grammar.parser().parse_args(argv)
    _warnings_to_stderr()
    args.bar = ProgressBar()
    try:
        return COMMANDS[args.command](args)
    except TcbuildError as e:
        if args.debug:
            traceback.print_exc()
        for line in e.lines:
            print(line, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        args.bar.close()


def _warnings_to_stderr() -> None:
    """The library's warnings (e.g. a dependency cycle) as `warning: ...` lines."""
    logger = logging.getLogger("tcbuild")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _recipe_and_options(args: argparse.Namespace) -> tuple[Recipe, FetchOptions]:
    from ..config.recipe import normalize_mirror
    from ..config.recipefile import load_recipe
    from ..sources.inputs import FetchOptions

    recipe = load_recipe(args.recipe)
    if args.mirror:
        try:
            recipe = recipe.with_mirrors(tuple(normalize_mirror(m) for m in args.mirror))
        except InputError as e:
            raise InputError(f"--mirror {e}") from e
    if args.offline and args.refresh:
        raise InputError("--offline and --refresh exclude each other")
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    progress = args.bar if sys.stderr.isatty() and not quiet else None
    return recipe, FetchOptions(cache_dir=args.cache, offline=args.offline, progress=progress,
                                locked=args.locked, refresh=args.refresh)


def _deps(args: argparse.Namespace) -> int:
    from ..sources.deps import render_tree
    from ..sources.fetch import resolve

    recipe, options = _recipe_and_options(args)
    resolution = resolve(recipe, options)
    if args.json:
        print(json.dumps({"recipe": str(recipe.path), **resolution.as_json()}, indent=2))
        return 0
    labels = {path.name: f"(local: {path})" for path in recipe.local}
    print(f"{recipe.path}: Tiny Core {recipe.release} {recipe.flavor} "
          f"({recipe.flavor.build}), {len(resolution.order)} extensions")
    for line in render_tree(resolution, labels):
        print(line)
    print(f"load order: {' '.join(resolution.order)}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from ..sources.fetch import fetch

    recipe, options = _recipe_and_options(args)
    inputs = fetch(recipe, options)
    if args.json:
        print(json.dumps(inputs.as_json(), indent=2))
    elif not args.quiet:
        for line in inputs.report():
            print(line)
    return 0


def _lock(args: argparse.Namespace) -> int:
    from ..stages.files import lock

    recipe, options = _recipe_and_options(args)
    path, inputs = lock(recipe, options)
    if not args.quiet:
        print(f"{path}: {len(inputs.used)} inputs locked")
    return 0


def _build(args: argparse.Namespace) -> int:
    from ..config.recipe import CheckPolicy, OutputMode
    from ..formats.compress import Compression
    from ..formats.manifest import MANIFEST
    from ..stages.build import BuildOptions, build

    recipe, fetch_options = _recipe_and_options(args)
    options = BuildOptions(
        out_dir=args.out, fetch=fetch_options, force=args.force,
        compression=Compression(args.compression) if args.compression else None,
        output=OutputMode(args.output) if args.output else None,
        check=CheckPolicy(args.check) if args.check else None,
    )
    result = build(recipe, options)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    elif not args.quiet:
        state = "up to date" if result.up_to_date else "built"
        print(f"{result.out_dir}: {state} in {result.seconds:.2f} s "
              f"(build {result.build_id[:12]})")
        print(f"  {result.kernel}")
        print(f"  {result.initrd}  {format_size(result.size)}, {result.entries} entries")
        print(f"  {result.out_dir / MANIFEST}")
    return 0


def _iso(args: argparse.Namespace) -> int:
    from ..stages.build import BuildOptions
    from ..stages.iso import build_iso

    recipe, fetch_options = _recipe_and_options(args)
    result = build_iso(recipe, args.out, BuildOptions(fetch=fetch_options), args.bootloader_dir)
    built = result.build
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    elif not args.quiet:
        state = "up to date" if built.up_to_date else f"built in {built.seconds:.2f} s"
        print(f"{built.out_dir}: {state} (build {built.build_id[:12]})")
        print(f"{result.path}: {format_size(result.size)}, volume {result.volume_id}, written in "
              f"{result.seconds:.2f} s")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from ..formats.manifest import format_entry, load_listing

    listing = load_listing(args.image)
    if args.json:
        print(json.dumps({"image": str(listing.source), "entries": list(listing.entries.values())},
                         indent=1))
    else:
        for facts in listing.entries.values():
            print(format_entry(facts))
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..check import run as checkrun

    args.recipe = args.recipe or checkrun.recipe_of(args.image)
    recipe, options = _recipe_and_options(args) if args.recipe else (None, None)
    findings = checkrun.check_target(args.image, args.kernel, recipe, options, args.ignore)
    if args.json:
        print(json.dumps({"image": str(args.image),
                          "findings": [f.as_json() for f in findings]}, indent=1))
    else:
        for finding in findings:
            print(finding.line())
        if not args.quiet:
            print(f"{args.image}: {len(findings)} finding(s)" if findings
                  else f"{args.image}: will run (nothing missing)", file=sys.stderr)
    return 1 if findings else 0


def _diff(args: argparse.Namespace) -> int:
    from ..formats.manifest import diff, format_diff, load_listing

    result = diff(load_listing(args.old), load_listing(args.new))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        lines = format_diff(result)
        for line in lines:
            print(line)
        counts = ", ".join(f"{len(v)} {k}" for k, v in result.items())
        print(f"{counts}" if lines else "no differences")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from ..boot.pxelinux import CONFIG_DIR
    from ..config.inventoryfile import load_inventory
    from ..stages.build import BuildOptions
    from ..stages.publish import publish_all

    recipe, fetch_options = _recipe_and_options(args)
    inventory = load_inventory(args.inventory) if args.inventory else None
    plans = publish_all(
        recipe, args.tftp, build_options=BuildOptions(out_dir=args.out, fetch=fetch_options),
        inventory=inventory, keep=args.keep, bootloader_dir=args.bootloader_dir,
        dry_run=args.dry_run, wait=args.wait, force=args.force)
    if args.json:
        shown = [{**plan.as_json(), "dry_run": args.dry_run} for plan in plans]
        print(json.dumps(shown[0] if len(shown) == 1 else shown, indent=1))
        return 0
    for plan in plans:
        if args.dry_run:
            if len(plans) > 1:
                print(f"{plan.shown}:")
            for line in plan.describe():
                print(line)
        elif plan.unchanged and not args.quiet:
            print(f"{plan.shown}: release {plan.release_id} is already published and current; "
                  "nothing to do")
        elif not args.quiet:
            sent = f" ({plan.sent} bytes sent)" if plan.sent is not None else ""
            print(f"{plan.shown}: published release {plan.release_id}{sent}")
            for name in plan.configs:
                print(f"  {CONFIG_DIR}/{name}")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from ..config.inventoryfile import load_inventory
    from ..stages import rollout as rolling
    from ..stages.build import BuildOptions

    def say(line: str) -> None:
        print(line, flush=True)

    if args.resume or args.abort:
        if args.recipe or args.inventory:
            raise InputError("--resume and --abort read the recipe and the inventory from "
                             "tcbuild/rollout.json: give neither")
        outcome = rolling.resume(args.tftp, abort=args.abort, say=say, wait=args.wait)
    else:
        if args.recipe is None or args.inventory is None:
            raise InputError("rollout: give RECIPE and --inventory (or --resume, --abort)")
        recipe, fetch_options = _recipe_and_options(args)
        inventory = load_inventory(args.inventory)
        options = rolling.RolloutOptions(
            waves=args.waves, canary=args.canary, healthy_for=args.healthy_for,
            boot_timeout=args.boot_timeout, drain_command=args.drain_command,
            drain_timeout=args.drain_timeout, keep_done=args.keep_done,
            manual_reboot=args.manual_reboot, poll=args.poll)
        outcome = rolling.rollout(
            recipe, args.tftp, inventory, BuildOptions(out_dir=args.out, fetch=fetch_options),
            args.logs, options, rolling.power_of(inventory), args.bootloader_dir, args.dry_run,
            args.wait, say)
    for line in outcome.lines:
        print(line)
    return 0


def _releases(args: argparse.Namespace) -> int:
    from ..stages.remote import releases_of

    views, disagree = releases_of(args.tftp)
    if args.json:
        shown: object = [r.as_json(configs) for r, configs in views[0].served]
        if len(views) > 1:
            shown = {"roots": [view.as_json() for view in views], "disagreements": disagree}
        print(json.dumps(shown, indent=1))
        return 0
    for view in views:
        if len(views) > 1:
            print(f"{view.root}:")
        for r, configs in view.served:
            marker = f"  current: {', '.join(configs)}" if configs else ""
            print(f"{'  ' if len(views) > 1 else ''}{r.id}  {r.recipe}  {r.time.isoformat()}  "
                  f"{format_size(r.size)}{marker}")
        if len(views) > 1:
            bootloader = ", ".join(f"{name} {(digest or 'missing')[:12]}"
                                   for name, digest in view.bootloader.items())
            print(f"  bootloader: {bootloader}")
    for line in disagree:
        print(line)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from ..stages.publish import rollback_all

    for done in rollback_all(args.tftp, args.release, args.wait):
        print(done.describe())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..config.inventoryfile import load_inventory
    from ..stages.remote import verify_roots

    inventory = load_inventory(args.inventory) if args.inventory else None
    problems = verify_roots(args.tftp, inventory)
    shown = ", ".join(map(str, args.tftp))
    if args.json:
        print(json.dumps({"tftp": shown, "problems": problems}, indent=1))
    else:
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{shown}: ok")
    return 1 if problems else 0


def _boot_test(args: argparse.Namespace) -> int:
    from ..fleet import boottest

    firmware, via = boottest.Firmware(args.firmware), boottest.Via(args.via)
    result = boottest.pxe_boot(args.tftp, args.log, args.expect, args.mac, args.timeout,
                               firmware, via)
    if args.json:
        print(json.dumps({"ok": result.ok, "reason": result.reason, "firmware": firmware.value,
                          "via": via.value, "seconds": round(result.seconds, 1),
                          "log": str(result.log)}, indent=1))
    elif result.ok:
        print(f"{args.tftp}: booted as {args.mac} in {result.seconds:.1f} s ({firmware} over "
              f"{via}, {result.reason})")
    else:
        print(f"{args.tftp}: boot failed after {result.seconds:.1f} s: {result.reason}",
              file=sys.stderr)
        print(f"--- end of {result.log} ---\n{result.tail}", file=sys.stderr)
    return 0 if result.ok else 1


def _doctor(args: argparse.Namespace) -> int:
    import dataclasses

    from . import doctor

    found = doctor.checks()
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in found], indent=1))
        return 0
    width = max(len(c.name) for c in found)
    for c in found:
        state = c.found or f"missing (apt-get install {c.package})"
        print(f"{c.name:<{width}}  {state}  [{c.needed_for}]")
    return 0


def _server_config(args: argparse.Namespace) -> int:
    from ..bootserver.files import Dhcp
    from ..config.inventoryfile import load_inventory
    from ..stages.files import check_server_config, write_server_config

    inventory = load_inventory(args.inventory)
    dhcp = [Dhcp(d) for d in args.dhcp or Dhcp]
    if not args.check:
        for path in write_server_config(inventory, args.out, dhcp):
            print(path)
        return 0
    diffs = check_server_config(inventory, args.out, dhcp)
    for lines in diffs.values():
        sys.stdout.writelines(lines)
    differ = sum(1 for lines in diffs.values() if lines)
    print(f"{differ} of {len(diffs)} files differ" if differ else "all files up to date",
          file=sys.stderr)
    return 1 if differ else 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "deps": _deps,
    "fetch": _fetch,
    "lock": _lock,
    "build": _build,
    "iso": _iso,
    "inspect": _inspect,
    "publish": _publish,
    "rollout": _rollout,
    "releases": _releases,
    "rollback": _rollback,
    "verify": _verify,
    "boot-test": _boot_test,
    "doctor": _doctor,
    "server-config": _server_config,
    "fleet": operate.fleet,
    "power": operate.power,
    "enroll": operate.enroll,
    "retire": operate.retire,
    "check": _check,
    "diff": _diff,
}


if __name__ == "__main__":
    sys.exit(main())
