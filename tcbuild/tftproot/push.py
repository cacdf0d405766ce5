"""What a remote root needs to become what its local mirror is now, and the POSIX-sh steps that
do it in two phases. Pure planning over two listings of the mirror (`scan`: before the local
code changed it, and after); nothing here talks to the far side (`stages.remote` does).

Phase 1 (`prep_script`, the upload, `check_command`): everything new goes into the root's
`tcbuild/staging-<id>/tree/`, under its final relative path. A file whose content the far side
already holds (a kernel an earlier release has) is hard-linked there, not sent; a file that
changed is hard-linked from its old version first, so rsync sends only the difference (rsync
writes a new file beside it and renames: the old one is untouched). Every staged file is then
checked by its sha256 on the far side, and synced.
Phase 2 (`switch_script`): release directories renamed into place first, then the bootloader
set, `boot.ipxe`, the configs' histories (`tcbuild/history.json`), each config with its iPXE
twin just before it, the other state files; then the retired configs and pruned releases moved
out into the staging directory, which is removed last. Each step is a rename(2) done only if
still to do, so running `switch.sh` again completes an interrupted switch; `undo.sh` puts back
what it replaced.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..boot import ipxe, syslinux
from ..boot.bootfile import IPXE_SCRIPT
from ..boot.pxelinux import CONFIG_DIR
from ..formats.manifest import file_sha256
from .remote import STAGING
from .state import BOOTLOADER, HISTORIES, HISTORY, RELEASES

Entry = tuple[int, int, int, int, str]  # kind and mode, size, mtime_ns, inode, symlink target
Manifest = dict[str, Entry]  # path relative to the root -> what it is
_SKIP = re.compile(r"tcbuild/\.lock|tcbuild/staging-.*|tcbuild/releases/\..*\.partial(/.*)?")


def scan(root: Path) -> Manifest:
    """Every file and symlink under `root` (not the lock, staging or partial releases)."""
    found: Manifest = {}
    for directory, dirs, files in os.walk(root):
        base = Path(directory)
        for name in [*files, *(d for d in dirs if (base / d).is_symlink())]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if _SKIP.fullmatch(rel):
                continue
            info = path.lstat()
            link = str(path.readlink()) if stat.S_ISLNK(info.st_mode) else ""
            found[rel] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino, link)
        dirs[:] = [d for d in dirs if not _SKIP.fullmatch((base / d).relative_to(root)
                                                          .as_posix())]
    return found


@dataclass(frozen=True)
class Push:
    """One root's push (see the module's text)."""

    staging: str  # relative to the root
    releases: tuple[str, ...]  # new release directories
    files: tuple[tuple[str, bool], ...]  # (path, existed before) in switch order
    dirs: tuple[str, ...]  # directories the switch makes, parents first
    delete: tuple[str, ...]  # files moved out, in order
    prune: tuple[str, ...]  # release directories moved out
    send: tuple[str, ...]  # what rsync sends
    link: Mapping[str, str] = field(default_factory=dict)  # staged path -> same content there
    basis: Mapping[str, str] = field(default_factory=dict)  # staged path -> its old version
    sums: Mapping[str, str] = field(default_factory=dict)  # staged file -> sha256

    @property
    def empty(self) -> bool:
        return not (self.releases or self.files or self.delete or self.prune)


def _order(rel: str) -> tuple[int, str, int]:
    """The switch order of a changed file (see the module's text)."""
    if rel in syslinux.PXE:
        return (1, rel, 0)
    if rel == BOOTLOADER:
        return (2, rel, 0)
    if rel == IPXE_SCRIPT:
        return (3, rel, 0)
    if rel == HISTORIES:  # every config's history, before the configs (as a local switch)
        return (4, "", -1)
    for rank, (prefix, suffix) in enumerate(((f"{HISTORY}/", ".json"),
                                             (f"{ipxe.SCRIPT_DIR}/", ipxe.SUFFIX),
                                             (f"{CONFIG_DIR}/", ""))):
        if rel.startswith(prefix) and rel.endswith(suffix) and "/" not in rel[len(prefix):]:
            return (4, rel[len(prefix):len(rel) - len(suffix)], rank)
    return (5, rel, 0)


def plan_push(before: Manifest, after: Manifest, root: Path, staging_id: str,
              prune: Sequence[str] = (), digest: Callable[[Path], str] | None = None) -> Push:
    """The push that makes the far side (as `before` lists it) what `root` is now (`after`),
    pruning the release ids `prune` (still in `root`: pruned after the push)."""
    sha = digest or file_sha256
    pruned = {f"{RELEASES}/{rid}" for rid in prune}
    changed = sorted(rel for rel, entry in after.items()
                     if before.get(rel) != entry and _release_dir(rel) not in pruned)
    new_releases = sorted({d for rel in changed if (d := _release_dir(rel))
                           and not any(_release_dir(old) == d for old in before)})
    files = [rel for rel in changed if _release_dir(rel) not in new_releases]
    files.sort(key=_order)
    gone = [rel for rel in before if rel not in after and _release_dir(rel) not in pruned]
    gone.sort(key=lambda rel: (-_order(rel)[0], _order(rel)[1], -_order(rel)[2]))
    unchanged = {rel: entry for rel, entry in after.items() if before.get(rel) == entry}
    by_size: dict[int, list[str]] = {}
    for rel, entry in sorted(unchanged.items()):
        if stat.S_ISREG(entry[0]):
            by_size.setdefault(entry[1], []).append(rel)
    known: dict[str, str] = {}
    link: dict[str, str] = {}
    basis: dict[str, str] = {}
    sums: dict[str, str] = {}
    send: list[str] = []
    for rel in changed:
        mode, size = after[rel][0], after[rel][1]
        if not stat.S_ISREG(mode):
            send.append(rel)
            continue
        sums[rel] = sha(root / rel)
        same = next((old for old in by_size.get(size, [])
                     if known.setdefault(old, sha(root / old)) == sums[rel]), None)
        if same is not None:
            link[rel] = same
            continue
        send.append(rel)
        old = _basis(rel, before, new_releases, unchanged)
        if old is not None:
            basis[rel] = old
    dirs = sorted({str(parent) for rel, _ in ((r, 0) for r in files)
                   for parent in PurePosixPath(rel).parents if str(parent) != "."},
                  key=lambda d: (d.count("/"), d))
    return Push(f"{STAGING}{staging_id}", tuple(new_releases),
                tuple((rel, rel in before) for rel in files), tuple(dirs), tuple(gone),
                tuple(sorted(pruned)), tuple(send), link, basis, sums)


def _release_dir(rel: str) -> str | None:
    parts = rel.split("/")
    return "/".join(parts[:3]) if len(parts) > 3 and rel.startswith(f"{RELEASES}/") else None


def _basis(rel: str, before: Manifest, new_releases: Sequence[str],
           unchanged: Manifest) -> str | None:
    """The far side's file rsync can send `rel` as a difference to: its old version, or the
    file of the same name in the newest earlier release."""
    if rel in before and stat.S_ISREG(before[rel][0]):
        return rel
    if _release_dir(rel) in new_releases:
        name = rel.rsplit("/", 1)[1]
        olds = sorted(r for r in unchanged if _release_dir(r) and r.endswith(f"/{name}"))
        return olds[-1] if olds else None
    return None


def _q(text: str) -> str:
    return shlex.quote(text)


def _heredoc(target: str, text: str) -> list[str]:
    return [f"cat > {target} <<'TCBUILD_END'", text.rstrip("\n"), "TCBUILD_END"]


def prep_script(push: Push, root: str) -> str:
    """Phase 1 before the upload: the staging directory, the links, SUMS and the two scripts."""
    s = _q(push.staging)
    lines = ["set -e", f"cd {_q(root)}", f"rm -rf {s}", f"mkdir -m 755 {s} {s}/tree"]
    staged = sorted({*push.send, *push.link, *push.sums})
    parents = sorted({str(PurePosixPath(rel).parent) for rel in staged} - {"."})
    lines += [f"mkdir -p {' '.join(_q(f'{push.staging}/tree/{d}') for d in parents)}"] \
        if parents else []
    lines += [f"ln {_q(old)} {_q(f'{push.staging}/tree/{rel}')}"
              for rel, old in sorted({**push.basis, **push.link}.items())]
    sums = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(push.sums.items()))
    lines += _heredoc(f"{s}/SUMS", sums or "\n")
    lines += _heredoc(f"{s}/switch.sh", switch_script(push, root))
    lines += _heredoc(f"{s}/undo.sh", undo_script(push, root))
    return "\n".join(lines) + "\n"


def check_command(push: Push, root: str) -> str:
    """Phase 1 after the upload: every staged file's sha256, the tree's directories made
    readable (0755), everything synced. Prints the files that fail."""
    tree = _q(f"{root}/{push.staging}/tree")
    check = "sha256sum -c --quiet --strict ../SUMS && " if push.sums else ""  # none: removals
    return f"cd {tree} && find . -type d -exec chmod 755 {{}} + && {check}sync"


def switch_script(push: Push, root: str) -> str:
    """Phase 2: the renames, in order; idempotent (run again, it completes)."""
    s = push.staging
    lines = ["#!/bin/sh", "# tcbuild: switch this root to what the staging directory holds",
             "set -e", f"cd {_q(root)}", f"S={_q(s)}", 'touch "$S/switching"',
             'keep() { [ -e "$S/old/$1" ] || { mkdir -p "$S/old/${1%/*}"; '
             'ln "$1" "$S/old/$1"; }; }',
             'put() { if [ -e "$S/tree/$1" ] || [ -L "$S/tree/$1" ]; then '
             '{ [ -e "$1" ] || [ -L "$1" ]; } && keep "$1"; mv -f "$S/tree/$1" "$1"; fi; }',
             'out() { if [ -e "$1" ] || [ -L "$1" ]; then mkdir -p "$S/old/${1%/*}"; '
             'mv -f "$1" "$S/old/$1"; fi; }']
    lines += [f"[ -d {_q(d)} ] || mkdir -m 755 {_q(d)}"
              for d in sorted({*push.dirs, *(str(PurePosixPath(r).parent)
                                             for r in push.releases)},
                              key=lambda d: (d.count("/"), d))]
    lines += [f'if [ -d "$S/tree/"{_q(r)} ] && [ ! -e {_q(r)} ]; then '
              f'mv "$S/tree/"{_q(r)} {_q(r)}; fi' for r in push.releases]
    lines += ["sync"] if push.releases else []
    lines += [f"put {_q(rel)}" for rel, _ in push.files]
    lines += [f"out {_q(rel)}" for rel in push.delete]
    lines += [f"out {_q(r)}" for r in push.prune]
    lines += ["sync", 'mv "$S" "$S.done"', 'rm -rf "$S.done"']
    return "\n".join(lines) + "\n"


def undo_script(push: Push, root: str) -> str:
    """Puts back what an interrupted `switch.sh` changed (the reverse order)."""
    lines = ["#!/bin/sh", "# tcbuild: undo an interrupted switch of this root", "set -e",
             f"cd {_q(root)}", f"S={_q(push.staging)}"]
    for rel in reversed([*push.delete, *push.prune]):
        lines.append(f'if [ -e "$S/old/"{_q(rel)} ]; then mv -f "$S/old/"{_q(rel)} {_q(rel)}; fi')
    for rel, existed in reversed(push.files):
        if existed:
            lines.append(f'if [ -e "$S/old/"{_q(rel)} ] && [ ! -e "$S/tree/"{_q(rel)} ]; then '
                         f'mv -f "$S/old/"{_q(rel)} {_q(rel)}; fi')
        else:
            lines.append(f'if [ ! -e "$S/tree/"{_q(rel)} ]; then rm -f {_q(rel)}; fi')
    for r in reversed(push.releases):
        lines.append(f'if [ ! -e "$S/tree/"{_q(r)} ] && [ -d {_q(r)} ]; then '
                     f'mv {_q(r)} "$S/tree/"{_q(r)}; fi')
    lines += ["sync", 'mv "$S" "$S.done"', 'rm -rf "$S.done"']
    return "\n".join(lines) + "\n"
