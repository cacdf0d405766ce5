"""A TFTP root on another machine, `ssh://[user@]host[:port]/path`: the URL, and the `ssh` and
`rsync` command lines that reach it. Pure: nothing here runs a program (`stages.remote` does).

Transport is the operator's own OpenSSH and rsync: their configuration, agent and known_hosts
apply. `BatchMode=yes` is the only option added to what the operator's configuration says
(nothing prompts; a host key is never accepted blindly); `host` may be an alias of
`~/.ssh/config`. `TCBUILD_SSH` replaces the `ssh` command (e.g. `ssh -F /etc/tcbuild/ssh_config`),
as `GIT_SSH_COMMAND` does for git. One command's ssh sessions share one connection (a control
socket in a private temporary directory), the lock's session.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, TcbuildError

SCHEME = "ssh://"
SSH_ENV = "TCBUILD_SSH"
# a root path the far side's shell and rsync take unquoted: no spaces, quotes or globs
_PATH = re.compile(r"/[A-Za-z0-9._/+@=,-]*")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
# the lock's session prints one of these first (see `lock_script`)
LOCKED, NO_ROOT, MISSING, BUSY, UNFINISHED = (
    "tcbuild-locked", "tcbuild-no-root", "tcbuild-missing", "tcbuild-busy", "tcbuild-unfinished")
STAGING = "tcbuild/staging-"  # + id: what a push uploads before the switch
EXCLUDED = ("/tcbuild/.lock", "/tcbuild/staging-*", "/tcbuild/releases/.*.partial")


@dataclass(frozen=True)
class Remote:
    """A TFTP root reached over SSH."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """What ssh is given: `[user@]host`."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def url(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{SCHEME}{self.destination}{port}{self.path}"

    def __str__(self) -> str:
        return self.url

    def key(self) -> str:
        """A file name for this root (its mirror's directory)."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.url[len(SCHEME):])


Root = Path | Remote


def parse_root(root: Path | str | Remote) -> Root:
    """A local root (a path) or a remote one (an `ssh://` URL); a bad URL is one line."""
    if isinstance(root, Remote | Path):
        return root
    if not root.startswith(SCHEME):
        if "://" in root:
            raise InputError(f"--tftp {root}: not a directory or an ssh://[user@]host[:port]"
                             "/path URL")
        return Path(root)
    return parse_url(root)


def parse_url(url: str) -> Remote:
    """`ssh://[user@]host[:port]/path`, the path absolute on the far side."""
    rest = url[len(SCHEME):]
    where, slash, path = rest.partition("/")
    path = slash + path
    bad = f"--tftp {url}: "
    if not slash or path == "/" and not where:
        raise InputError(bad + "no path (ssh://[user@]host[:port]/path)")
    user, at, hostport = where.rpartition("@")
    host, colon, port_text = hostport.partition(":")
    if not at:
        user = ""
    if not host or not _HOST.fullmatch(host):
        raise InputError(bad + f"not a host name: {host!r}")
    if at and not _USER.fullmatch(user):
        raise InputError(bad + f"not a user name: {user!r}")
    port = None
    if colon:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InputError(bad + f"not a port: {port_text!r}")
        port = int(port_text)
    if not _PATH.fullmatch(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
        raise InputError(bad + "the path must be absolute and plain (letters, digits, "
                         "._/+@=,-; no . or .. step)")
    return Remote(host, path.rstrip("/") or "/", user or None, port)


def ssh_base(env: Mapping[str, str] | None = None) -> list[str]:
    """The operator's ssh command (`TCBUILD_SSH`, else `ssh`) as argv."""
    text = (os.environ if env is None else env).get(SSH_ENV, "").strip()
    try:
        argv = shlex.split(text) if text else ["ssh"]
    except ValueError as e:
        raise InputError(f"{SSH_ENV}: {e}") from None
    return argv


def ssh_options(remote: Remote, control: Path, master: bool = False) -> list[str]:
    """The options every session to `remote` takes: no prompt, its port, the shared
    connection (`master`: the one that opens it)."""
    options = ["-o", "BatchMode=yes", "-o", f"ControlPath={control}",
               "-o", f"ControlMaster={'yes' if master else 'no'}"]
    return options + (["-p", str(remote.port)] if remote.port is not None else [])


def ssh_argv(base: Sequence[str], remote: Remote, control: Path, command: str,
             master: bool = False) -> list[str]:
    """ssh running `command` (one string, as the far side's login shell reads it)."""
    return [*base, *ssh_options(remote, control, master), remote.destination, command]


def sh_command(script: str, *args: str) -> str:
    """`sh -c SCRIPT tcbuild ARGS...` quoted for the far side's login shell."""
    return " ".join(["sh", "-c", shlex.quote(script), "tcbuild", *map(shlex.quote, args)])


def rsync_argv(base: Sequence[str], remote: Remote, control: Path, source: str, target: str,
               options: Sequence[str] = ()) -> list[str]:
    """rsync through the shared connection; `source` or `target` is `remote:PATH` for the far
    side (see `remote_spec`). Archive mode with hard links and numeric ids, its statistics."""
    shell = " ".join(shlex.quote(part) for part in [*base, *ssh_options(remote, control)])
    return ["rsync", "-aH", "--numeric-ids", "--stats", "-e", shell, *options, source, target]


def remote_spec(remote: Remote, path: str) -> str:
    return f"{remote.destination}:{path}"


def lock_script() -> str:
    """The lock's session (`sh -c` with ROOT and WAIT): checks the root and the tools the
    push needs, removes what an earlier failed push left, then holds `ROOT/tcbuild/.lock`
    (the lock a local publish takes) until ssh's stdin closes. Prints one status line."""
    return r"""root=$1; wait=$2
[ -d "$root" ] || { echo tcbuild-no-root; exit 0; }
for tool in rsync flock sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "tcbuild-missing $tool"; exit 0; }
done
[ -d "$root/tcbuild" ] || mkdir -m 755 "$root/tcbuild" || exit 1
exec flock -w "$wait" "$root/tcbuild/.lock" sh -c '
  root=$1
  for dir in "$root"/tcbuild/staging-*; do
    [ -d "$dir" ] || continue
    case $dir in
      *.done) rm -rf "$dir" ;;
      *) if [ -e "$dir/switching" ]; then echo "tcbuild-unfinished $dir"; exit 0; fi
         rm -rf "$dir" ;;
    esac
  done
  echo tcbuild-locked
  exec cat >/dev/null' tcbuild "$root" || echo tcbuild-busy
"""


def last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def ssh_failure(remote: Remote, returncode: int, stderr: str, doing: str) -> TcbuildError:
    """ssh's or rsync's failure as one line naming the root (255: ssh could not connect or
    log in; rsync's own codes otherwise)."""
    said = last_line(stderr)
    if "Host key verification failed" in stderr:
        said += " (the host key is not in known_hosts: check it and add it; tcbuild never " \
                "accepts one)"
    elif "Permission denied" in stderr:
        said += " (the login was refused)"
    tool = "ssh" if returncode == 255 else f"exit {returncode}"
    return TcbuildError(f"{remote}: {doing} failed ({tool}): {said}")


def status_error(remote: Remote, status: str, wait: float, ssh: str) -> TcbuildError:
    """The lock session's first line, when it is not LOCKED, as one line."""
    word, _, rest = status.partition(" ")
    if word == NO_ROOT:
        return InputError(f"{remote}: the TFTP root does not exist")
    if word == MISSING:
        return TcbuildError(f"{remote}: {rest} is not installed on the far side (or not in "
                            "the PATH of that login): it is needed there")
    if word == BUSY:
        return TcbuildError(f"{remote}: another publish is running (waited {wait:.0f} s)")
    if word == UNFINISHED:
        return TcbuildError(f"{remote}: a switch was interrupted: finish it with `{ssh} sh "
                            f"{rest}/switch.sh` (or undo it with `... sh {rest}/undo.sh`)")
    return TcbuildError(f"{remote}: unexpected answer from the far side: {status!r}")


def printable(base: Sequence[str], remote: Remote) -> str:
    """The ssh command an operator types to reach `remote` (for messages)."""
    port = ["-p", str(remote.port)] if remote.port is not None else []
    return " ".join(shlex.quote(part) for part in [*base, *port, remote.destination])
