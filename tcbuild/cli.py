"""The `tcbuild` command: parses arguments, calls the library, prints results. Nothing else."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from . import boottest, checkrun, doctor, fleet, pipeline, tftp
from .atomic import publish_files
from .build import BuildOptions, build
from .compress import Compression
from .deps import render_tree
from .errors import InputError, TcbuildError
from .fetch import FetchOptions, Inputs, fetch, resolve
from .inventory import load_inventory
from .lockfile import lock_path, lock_text, read_lock
from .manifest import MANIFEST, diff, format_diff, format_entry, load_listing
from .pxelinux import CONFIG_DIR
from .recipe import CheckPolicy, OutputMode, Recipe, load_recipe, normalize_mirror
from .server import Dhcp, server_files
from .version import __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit 0 on success, 1 on a failure, 2 on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    _warnings_to_stderr()
    try:
        command: Callable[[argparse.Namespace], int] = args.command
        return command(args)
    except TcbuildError as e:
        if args.debug:
            traceback.print_exc()
        for line in e.lines:
            print(line, file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a file system problem nothing above could name better
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"{where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _warnings_to_stderr() -> None:
    """The library's warnings (e.g. a dependency cycle) as `warning: ...` lines."""
    logger = logging.getLogger("tcbuild")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcbuild", description="Build and publish network-boot images for Tiny Core Linux."
    )
    parser.add_argument("--version", action="version", version=f"tcbuild {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.set_defaults(debug=False)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    tftp_root = argparse.ArgumentParser(add_help=False)
    tftp_root.add_argument("--tftp", type=Path, required=True, metavar="DIR",
                           help="the TFTP root")
    json_output = argparse.ArgumentParser(add_help=False)
    json_output.add_argument("--json", action="store_true", help="print the result as JSON")
    mirror_options = argparse.ArgumentParser(add_help=False)
    group = mirror_options.add_argument_group("mirror and cache")
    group.add_argument("--mirror", action="append", metavar="URL",
                       help="mirror base URL (repeatable; replaces the recipe's list)")
    group.add_argument("--cache", type=Path, metavar="DIR",
                       help="download cache (default: ~/.cache/tcbuild)")
    group.add_argument("--offline", action="store_true",
                       help="use the cache only; name whatever is missing")
    group.add_argument("--refresh", action="store_true",
                       help="check the cache against the mirror's current checksums")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars or report")
    group.add_argument("--json", action="store_true", help="print the result as JSON")
    group.add_argument("--locked", action="store_true",
                       help="fail unless the inputs are exactly those of the recipe's lock file")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")

    deps = commands.add_parser("deps", parents=[mirror_options],
                               help="print the resolved extension dependency tree")
    deps.add_argument("recipe", type=Path)
    deps.set_defaults(command=_deps)

    fetch_cmd = commands.add_parser("fetch", parents=[mirror_options],
                                    help="download, verify and cache everything a recipe names")
    fetch_cmd.add_argument("recipe", type=Path)
    fetch_cmd.set_defaults(command=_fetch)

    lock_cmd = commands.add_parser("lock", parents=[mirror_options],
                                   help="write RECIPE.lock: the sha256 of every input")
    lock_cmd.add_argument("recipe", type=Path)
    lock_cmd.set_defaults(command=_lock, relock=True)

    build_cmd = commands.add_parser("build", parents=[mirror_options],
                                    help="build the kernel and initrd (and build.json)")
    build_cmd.add_argument("recipe", type=Path)
    build_cmd.add_argument("--out", type=Path, metavar="DIR",
                           help="output directory (default: build/<recipe name>)")
    build_cmd.add_argument("--compression", choices=[c.value for c in Compression],
                           help="small (default: as small as advdef -z4) or fast (for iterating)")
    build_cmd.add_argument("--fast", dest="compression", action="store_const", const="fast",
                           help="same as --compression fast")
    build_cmd.add_argument("--output", choices=[o.value for o in OutputMode],
                           help="repack (default) or append (the untouched base + one segment)")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build_cmd.add_argument("--check", choices=[c.value for c in CheckPolicy],
                           help="the will-it-run check: warn, error or off (default: the "
                                "recipe's [image] check, else warn)")
    build_cmd.set_defaults(command=_build)

    iso_cmd = commands.add_parser("iso", parents=[mirror_options],
                                  help="build, then write a bootable ISO (a CD or a USB stick)")
    iso_cmd.add_argument("recipe", type=Path)
    iso_cmd.add_argument("-o", "--out", type=Path, metavar="FILE",
                         help="the ISO file (default: build/<recipe name>/<recipe name>.iso)")
    iso_cmd.add_argument("--bootloader-dir", type=Path, metavar="DIR",
                         help="where isolinux.bin and ldlinux.c32 are (default: Debian's)")
    iso_cmd.set_defaults(command=_iso)

    inspect = commands.add_parser("inspect", parents=[json_output],
                                  help="list an image's entries with provenance")
    inspect.add_argument("image", type=Path, help="a build directory or an initramfs file")
    inspect.set_defaults(command=_inspect)

    publish_cmd = commands.add_parser("publish", parents=[mirror_options, tftp_root],
                                      help="build and publish into a TFTP root, atomically")
    publish_cmd.add_argument("recipe", type=Path)
    publish_cmd.add_argument("--inventory", type=Path, metavar="FILE",
                             help="hosts whose group boots another recipe or boot line")
    publish_cmd.add_argument("--keep", type=int, default=5, metavar="N",
                             help="releases to keep (never the current or previous one)")
    publish_cmd.add_argument("--bootloader-dir", type=Path, metavar="DIR",
                             help="where pxelinux.0 and ldlinux.c32 are (default: Debian's)")
    publish_cmd.add_argument("--out", type=Path, metavar="DIR",
                             help="where the image is built (default: build/<recipe name>)")
    publish_cmd.add_argument("--dry-run", action="store_true", help="show what would change")
    publish_cmd.add_argument("--force", action="store_true",
                             help="a new release even if the tree already serves this build")
    publish_cmd.add_argument("--wait", type=float, default=30.0, metavar="S",
                             help="how long to wait for another publish (default 30 s)")
    publish_cmd.set_defaults(command=_publish)

    releases_cmd = commands.add_parser("releases", parents=[tftp_root, json_output],
                                       help="list the releases of a TFTP root")
    releases_cmd.set_defaults(command=_releases)

    rollback_cmd = commands.add_parser("rollback", parents=[tftp_root],
                                       help="boot the previous (or a given) release")
    rollback_cmd.add_argument("release", nargs="?", help="release id (default: the previous)")
    rollback_cmd.set_defaults(command=_rollback)

    verify_cmd = commands.add_parser("verify", parents=[tftp_root, json_output],
                                     help="check a published TFTP root")
    verify_cmd.set_defaults(command=_verify)

    boot_cmd = commands.add_parser("boot-test", parents=[tftp_root, json_output],
                                   help="network-boot a published tree under QEMU")
    boot_cmd.add_argument("--firmware", choices=[f.value for f in boottest.Firmware],
                          default="bios", help="SeaBIOS or OVMF (default: bios)")
    boot_cmd.add_argument("--via", choices=[v.value for v in boottest.Via], default="tftp",
                          help="TFTP, or HTTP through iPXE and boot.ipxe (default: tftp)")
    boot_cmd.add_argument("--mac", default=boottest.DEFAULT_MAC,
                          help=f"the booting NIC's MAC (default {boottest.DEFAULT_MAC})")
    boot_cmd.add_argument("--expect", default="login:", metavar="TEXT",
                          help="console text that means success (default: login:)")
    boot_cmd.add_argument("--timeout", type=float, default=120.0, metavar="S")
    boot_cmd.add_argument("--log", type=Path, default=Path("build/boot-test.log"), metavar="FILE",
                          help="where the console goes (default: build/boot-test.log)")
    boot_cmd.set_defaults(command=_boot_test)

    doctor_cmd = commands.add_parser("doctor", parents=[json_output],
                                     help="which external tools and files are here")
    doctor_cmd.set_defaults(command=_doctor)

    server = commands.add_parser("server-config",
                                 help="write the boot server's DHCP, rsyslog, NFS, TFTP files")
    server.add_argument("inventory", type=Path)
    server.add_argument("--out", type=Path, metavar="DIR", default=Path("build/server"),
                        help="where to write them (default: build/server)")
    server.add_argument("--check", action="store_true",
                        help="compare with the files in --out, show a diff, write nothing")
    server.add_argument("--dhcp", action="append", choices=[d.value for d in Dhcp],
                        help="the DHCP server to write configs for (repeatable; default: all)")
    server.set_defaults(command=_server_config)

    fleet_cmd = commands.add_parser("fleet", parents=[json_output],
                                    help="which build and release each node booted, from the "
                                         "log host's files")
    fleet_cmd.add_argument("--inventory", type=Path, required=True, metavar="FILE")
    fleet_cmd.add_argument("--logs", type=Path, metavar="DIR",
                           help="the per-node log files (default: the inventory's log_dir)")
    fleet_cmd.add_argument("--tftp", type=Path, metavar="DIR",
                           help="the TFTP root: compare with the release each node's config "
                                "names")
    fleet_cmd.set_defaults(command=_fleet)

    check_cmd = commands.add_parser(
        "check", parents=[mirror_options],
        help="will it run? libraries, interpreters, kernel and modules of an image")
    check_cmd.add_argument("image", type=Path, help="a build directory or an initrd")
    check_cmd.add_argument("--kernel", type=Path, metavar="FILE",
                           help="the kernel (default: the build directory's)")
    check_cmd.add_argument("--recipe", type=Path, metavar="RECIPE",
                           help="whose exceptions and mirror (provides.db) to use "
                                "(default: the build's, if it is still there)")
    check_cmd.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                           help="an image path (glob) whose findings are deliberate")
    check_cmd.set_defaults(command=_check)

    diff_cmd = commands.add_parser("diff", parents=[json_output],
                                   help="what changed between two builds or images")
    diff_cmd.add_argument("old", type=Path)
    diff_cmd.add_argument("new", type=Path)
    diff_cmd.set_defaults(command=_diff)
    return parser


def _recipe_and_options(args: argparse.Namespace) -> tuple[Recipe, FetchOptions]:
    recipe = load_recipe(args.recipe)
    if args.mirror:
        try:
            recipe = recipe.with_mirrors(tuple(normalize_mirror(m) for m in args.mirror))
        except InputError as e:
            raise InputError(f"--mirror {e}") from e
    if args.offline and args.refresh:
        raise InputError("--offline and --refresh exclude each other")
    progress = False if args.quiet or args.json else None
    lock = None if getattr(args, "relock", False) else read_lock(recipe)
    return recipe, FetchOptions(cache_dir=args.cache, offline=args.offline, progress=progress,
                                lock=lock, locked=args.locked, refresh=args.refresh)


def _deps(args: argparse.Namespace) -> int:
    recipe, options = _recipe_and_options(args)
    resolution = resolve(recipe, options)
    if args.json:
        print(json.dumps({
            "recipe": str(recipe.path),
            "roots": list(resolution.roots),
            "graph": {name: list(deps) for name, deps in resolution.graph.items()},
            "order": list(resolution.order),
            "cycles": [list(cycle) for cycle in resolution.cycles],
        }, indent=2))
        return 0
    labels = {path.name: f"(local: {path})" for path in recipe.local}
    print(f"{recipe.path}: Tiny Core {recipe.release} {recipe.flavor} "
          f"({recipe.flavor.build}), {len(resolution.order)} extensions")
    for line in render_tree(resolution, labels):
        print(line)
    print(f"load order: {' '.join(resolution.order)}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    recipe, options = _recipe_and_options(args)
    inputs = fetch(recipe, options)
    if args.json:
        print(json.dumps(_inputs_json(inputs), indent=2))
    elif not args.quiet:
        for line in _fetch_report(inputs):
            print(line)
    return 0


def _lock(args: argparse.Namespace) -> int:
    recipe, options = _recipe_and_options(args)
    inputs = fetch(recipe, options)
    path = lock_path(recipe)
    publish_files(path.parent, {path.name: lock_text(recipe, inputs).encode()})
    if not args.quiet:
        print(f"{path}: {len(inputs.used)} inputs locked")
    return 0


def _build(args: argparse.Namespace) -> int:
    recipe, fetch_options = _recipe_and_options(args)
    options = BuildOptions(
        out_dir=args.out, fetch=fetch_options, force=args.force,
        compression=Compression(args.compression) if args.compression else None,
        output=OutputMode(args.output) if args.output else None,
        check=CheckPolicy(args.check) if args.check else None,
    )
    result = build(recipe, options)
    if args.json:
        print(json.dumps({
            "out_dir": str(result.out_dir), "kernel": str(result.kernel),
            "initrd": str(result.initrd), "build_id": result.build_id,
            "up_to_date": result.up_to_date, "entries": result.entries, "size": result.size,
            "seconds": round(result.seconds, 3),
            "findings": [f.as_json() for f in result.findings],
        }, indent=2))
    elif not args.quiet:
        state = "up to date" if result.up_to_date else "built"
        print(f"{result.out_dir}: {state} in {result.seconds:.2f} s "
              f"(build {result.build_id[:12]})")
        print(f"  {result.kernel}")
        print(f"  {result.initrd}  {_size(result.size)}, {result.entries} entries")
        print(f"  {result.out_dir / MANIFEST}")
    return 0


def _iso(args: argparse.Namespace) -> int:
    recipe, fetch_options = _recipe_and_options(args)
    result = pipeline.build_iso(recipe, args.out, BuildOptions(fetch=fetch_options),
                                args.bootloader_dir)
    built = result.build
    if args.json:
        print(json.dumps({
            "iso": str(result.path), "size": result.size, "sha256": result.sha256,
            "volume_id": result.volume_id, "seconds": round(result.seconds, 3),
            "build": {"out_dir": str(built.out_dir), "build_id": built.build_id,
                      "up_to_date": built.up_to_date, "seconds": round(built.seconds, 3)},
        }, indent=2))
    elif not args.quiet:
        state = "up to date" if built.up_to_date else f"built in {built.seconds:.2f} s"
        print(f"{built.out_dir}: {state} (build {built.build_id[:12]})")
        print(f"{result.path}: {_size(result.size)}, volume {result.volume_id}, written in "
              f"{result.seconds:.2f} s")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    listing = load_listing(args.image)
    if args.json:
        print(json.dumps({"image": str(listing.source), "entries": list(listing.entries.values())},
                         indent=1))
    else:
        for facts in listing.entries.values():
            print(format_entry(facts))
    return 0


def _check(args: argparse.Namespace) -> int:
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
    recipe, fetch_options = _recipe_and_options(args)
    inventory = load_inventory(args.inventory) if args.inventory else None
    plan = pipeline.publish(
        recipe, args.tftp, build_options=BuildOptions(out_dir=args.out, fetch=fetch_options),
        inventory=inventory,
        keep=args.keep, bootloader_dir=args.bootloader_dir, dry_run=args.dry_run,
        wait=args.wait, force=args.force)
    if args.dry_run:
        for line in plan.describe():
            print(line)
    elif plan.unchanged and not args.quiet:
        print(f"{args.tftp}: release {plan.release_id} is already published and current; "
              "nothing to do")
    elif not args.quiet:
        print(f"{args.tftp}: published release {plan.release_id}")
        for name in plan.configs:
            print(f"  {CONFIG_DIR}/{name}")
    return 0


def _releases(args: argparse.Namespace) -> int:
    found = tftp.releases(args.tftp)
    used = tftp.current(args.tftp)
    if args.json:
        print(json.dumps([{"id": r.id, "recipe": r.recipe, "time": r.meta.get("time"),
                           "size": r.size, "configs": sorted(used.get(r.id, ()))}
                          for r in found], indent=1))
        return 0
    for r in found:
        marker = f"  current: {', '.join(sorted(used[r.id]))}" if r.id in used else ""
        print(f"{r.id}  {r.recipe}  {r.meta.get('time', '?')}  {_size(r.size)}{marker}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    with tftp.locked(args.tftp):
        now, before = tftp.previous(args.tftp)
        target = args.release or before
        changed = tftp.switch(args.tftp, now, target)
    print(f"{args.tftp}: {', '.join(changed)} now boot{'s' if len(changed) == 1 else ''} "
          f"{target} (was {now})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    problems = tftp.verify(args.tftp)
    if args.json:
        print(json.dumps({"tftp": str(args.tftp), "problems": problems}, indent=1))
    else:
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{args.tftp}: ok")
    return 1 if problems else 0


def _boot_test(args: argparse.Namespace) -> int:
    firmware, via = boottest.Firmware(args.firmware), boottest.Via(args.via)
    result = boottest.pxe_boot(args.tftp, args.log, args.expect, args.mac, args.timeout,
                               firmware, via)
    if args.json:
        print(json.dumps({"ok": result.ok, "reason": result.reason, "firmware": firmware.value,
                          "via": via.value, "seconds": round(result.seconds, 1),
                          "log": str(result.log)}, indent=1))
    elif result.ok:
        print(f"{args.tftp}: booted as {args.mac} ({firmware} over {via}) in "
              f"{result.seconds:.1f} s ({result.reason})")
    else:
        print(f"{args.tftp}: boot failed after {result.seconds:.1f} s: {result.reason}",
              file=sys.stderr)
        print(f"--- end of {result.log} ---\n{result.tail}", file=sys.stderr)
    return 0 if result.ok else 1


def _doctor(args: argparse.Namespace) -> int:
    found = doctor.checks()
    if args.json:
        print(json.dumps([{"name": c.name, "package": c.package, "needed_for": c.needed_for,
                           "found": c.found} for c in found], indent=1))
        return 0
    width = max(len(c.name) for c in found)
    for c in found:
        state = c.found or f"missing (apt-get install {c.package})"
        print(f"{c.name:<{width}}  {state}  [{c.needed_for}]")
    return 0


def _server_config(args: argparse.Namespace) -> int:
    files = server_files(load_inventory(args.inventory), [Dhcp(d) for d in args.dhcp or Dhcp])
    if not args.check:
        publish_files(args.out, {name: text.encode() for name, text in files.items()})
        for name in files:
            print(args.out / name)
        return 0
    differ = 0
    for name, text in files.items():
        target = args.out / name
        try:
            installed = target.read_text()
        except FileNotFoundError:
            installed = None
        if installed == text:
            continue
        differ += 1
        old = [] if installed is None else installed.splitlines(keepends=True)
        sys.stdout.writelines(difflib.unified_diff(
            old, text.splitlines(keepends=True),
            str(target) if installed is not None else "/dev/null", f"{target} (generated)"))
    print(f"{differ} of {len(files)} files differ" if differ else "all files up to date",
          file=sys.stderr)
    return 1 if differ else 0


def _fleet(args: argparse.Namespace) -> int:
    nodes = fleet.survey(args.inventory, args.logs, args.tftp)
    if args.json:
        print(json.dumps([n.as_json() for n in nodes], indent=1))
    else:
        for line in fleet.render(nodes):
            print(line)
    return 0


def _inputs_json(inputs: Inputs) -> dict[str, object]:
    return {
        "recipe": str(inputs.recipe.path),
        "kernel_version": inputs.kernel_version,
        "order": list(inputs.resolution.order),
        "files": [
            {"name": f.name, "path": str(f.path), "sha256": f.sha256, "size": f.size,
             "origin": f.origin}
            for f in inputs.files
        ],
    }


def _fetch_report(inputs: Inputs) -> list[str]:
    width = max(len(f.name) for f in inputs.files)
    lines = [f"  {f.name:<{width}}  {_size(f.size):>10}  {f.origin}" for f in inputs.files]
    origins = Counter(f.origin for f in inputs.files)
    parts = []
    for origin, count in sorted(origins.items()):
        where = {"cache": "from the cache", "local": "local"}.get(origin, f"from {origin}")
        parts.append(f"{count} {where}")
    total = sum(f.size for f in inputs.files)
    lines.append(f"{len(inputs.files)} files, {_size(total)}, verified: {', '.join(parts)} "
                 f"(kernel {inputs.kernel_version})")
    return lines


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


if __name__ == "__main__":
    sys.exit(main())
