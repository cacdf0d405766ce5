"""A catalogue of bad inputs, each through the command an operator types.

For each: the exit status, exactly one line on stderr naming the file, key, URL or entry and the
problem (no traceback), and proof that no output was written or published (the output
directory and the TFTP root hash the same before and after).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcbuild.boot import syslinux

from .kit.mirrortree import MirrorServer, MirrorTree
from .kit.requires import require_tool

ROOT = Path(__file__).resolve().parent.parent
X64 = "15.x/x86_64"
DIST = f"{X64}/release/distribution_files"


@dataclass(frozen=True)
class Site:
    root: Path
    mirror: Path  # a private copy of the stand-in mirror, free to damage
    url: str

    @property
    def recipe(self) -> Path:
        return self.root / "recipes/gameserver.toml"

    @property
    def inventory(self) -> Path:
        return self.root / "examples/cluster.toml"

    def edit(self, path: Path, old: str, new: str) -> None:
        text = path.read_text()
        assert old in text, (old, path)
        path.write_text(text.replace(old, new, 1))

    def replace_on_mirror(self, rel: str, data: bytes) -> None:
        """Serve other bytes under `rel`, with a matching `.md5.txt` (so only content is wrong)."""
        (self.mirror / rel).write_bytes(data)
        name = rel.rsplit("/", 1)[-1]
        (self.mirror / f"{rel}.md5.txt").write_text(
            f"{hashlib.md5(data).hexdigest()}  {name}\n")


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Site], None]
    args: tuple[str, ...]  # {recipe} {inventory} {tftp} {out} {cache} {mirror} are filled in
    status: int
    line: str  # a regular expression the one stderr line must match


def _mksquashfs(site: Site, *options: str) -> None:
    source = site.root / "odd"
    (source / "usr/local").mkdir(parents=True, exist_ok=True)
    target = site.root / "recipes/extras/nrpe.tcz"
    target.unlink()
    subprocess.run(["mksquashfs", str(source), str(target), "-noappend", "-quiet",
                    "-no-progress", *options], check=True, capture_output=True)
    (site.root / "recipes/extras/nrpe.tcz.md5.txt").unlink()


def _newc(name: bytes, namesize: int | None = None, data: bytes = b"") -> bytes:
    size = len(name) + 1 if namesize is None else namesize
    fields = [1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, size, 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    return header + name + b"\0" + b"\0" * ((4 - (110 + len(name) + 1) % 4) % 4) + data


def _overlay_tar(site: Site, member: str) -> None:
    """The example's overlay given as a tar archive holding one more (bad) member."""
    archive = site.root / "overlays/site.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(site.root / "overlays/gameserver", arcname=".")
        info = tarfile.TarInfo(member)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    site.edit(site.recipe, '"../overlays/gameserver"', '"../overlays/site.tar"')


def _bmc(site: Site, mode: int) -> None:
    """server1 gets a BMC whose password file has `mode`."""
    secret = site.inventory.parent / "bmc.pw"
    secret.write_text("secret\n")
    secret.chmod(mode)
    site.edit(site.inventory, 'second_ip = "172.16.1.5"', 'second_ip = "172.16.1.5"\n'
              'bmc = "ipmi://10.1.2.5"\nbmc_user = "admin"\nbmc_password_file = "bmc.pw"')


def _malformed_elf(site: Site) -> None:
    """A copy of an executable whose program headers are said to start near 2**64."""
    data = Path("/usr/bin/xz").read_bytes()
    target = site.root / "overlays/gameserver/opt/bad"
    target.write_bytes(data[:0x20] + (0xFFFFFFFFFFFFFFF0).to_bytes(8, "little") + data[0x28:])
    target.chmod(0o755)


def _nested(path: Path) -> None:
    """3,000 arrays, one in the other: deeper than Python's TOML reader can recurse."""
    with path.open("a") as file:
        file.write("\n[deep]\nx = " + "[" * 3000 + "]" * 3000 + "\n")


BUILD = ("build", "{recipe}", "--mirror", "{mirror}", "--cache", "{cache}", "--out", "{out}")
PUBLISH = ("publish", "{recipe}", "--tftp", "{tftp}", "--mirror", "{mirror}", "--cache",
           "{cache}", "--bootloader-dir", "{boot}")
ISO = ("iso", "{recipe}", "--mirror", "{mirror}", "--cache", "{cache}", "--bootloader-dir",
       "{boot}")
SERVER = ("server-config", "{inventory}", "--out", "{out}")
POWER = ("power", "cycle", "server1", "--inventory", "{inventory}")
ENROLL = ("enroll", "--inventory", "{inventory}")
NEW = ("enroll", "52:54:00:00:00:0a", "--inventory", "{inventory}")
ROLLOUT = ("rollout", "{recipe}", "--tftp", "{tftp}", "--inventory", "{inventory}", "--mirror",
           "{mirror}", "--cache", "{cache}", "--bootloader-dir", "{boot}", "--manual-reboot")
RCP = r"\S*recipes/gameserver\.toml"
INV = r"\S*examples/cluster\.toml"

CASES = [
    # recipes
    Case("toml syntax", lambda s: s.edit(s.recipe, 'release = "15.x"', "release = "),
         BUILD, 2, rf"{RCP}:\d+:\d+: invalid TOML: .+"),
    Case("wrong type", lambda s: s.edit(s.recipe, 'release = "15.x"', "release = 15"),
         BUILD, 2, rf"{RCP}: tinycore\.release: expected a string, got an integer"),
    Case("unknown key", lambda s: s.edit(s.recipe, "[boot]", "[boot]\nappendd = 'x'"),
         BUILD, 2, rf"{RCP}: boot\.appendd: unknown key \(did you mean 'append'\?\).*"),
    Case("bad flavor", lambda s: s.edit(s.recipe, '"corepure64"', '"pure64"'),
         BUILD, 2, rf"{RCP}: tinycore\.flavor: 'pure64' is not one of: core \| corepure64 \| "
         r"core64"),
    Case("missing overlay", lambda s: shutil.rmtree(s.root / "overlays/gameserver"),
         BUILD, 2, rf"{RCP}: overlay\[0\]\.source: directory '../overlays/gameserver' does not "
         r"exist .*"),
    Case("missing local extension", lambda s: (s.root / "recipes/extras/nrpe.tcz").unlink(),
         BUILD, 2, rf"{RCP}: extensions\.local\[0\]: file 'extras/nrpe\.tcz' does not exist .*"),
    Case("missing recipe", lambda s: s.recipe.unlink(),
         BUILD, 2, rf"{RCP}: cannot read recipe: No such file or directory"),
    Case("not utf-8", lambda s: s.recipe.write_bytes(b"\xff\xfe[tinycore]\n"),
         BUILD, 2, rf"{RCP}: not UTF-8 text \(byte 0\)"),
    Case("unknown extension", lambda s: s.edit(s.recipe, '"nfs-utils"]', '"nfs-utilz"]'),
         BUILD, 2, rf"{RCP}: extensions\.install\[1\]: 'nfs-utilz' is not on the mirror "
         r"\(did you mean 'nfs-utils'\?\)"),
    Case("bad mode", lambda s: s.edit(s.recipe, 'mode  = "0775"', 'mode  = "rwx"'),
         BUILD, 2, rf"{RCP}: files\.\"/opt/bootlocal\.sh\"\.mode: 'rwx' is not a mode .*"),
    Case("unknown owner", lambda s: s.edit(s.recipe, 'owner = "root"', 'owner = "games"'),
         BUILD, 2, rf"{RCP}: files\.\"/opt/bootlocal\.sh\"\.owner: no user 'games' in the image's "
         r"/etc/passwd"),
    Case("files path not in overlay", lambda s: s.edit(s.recipe, '[files."/opt/bootlocal.sh"]',
                                                      '[files."/opt/other.sh"]'),
         BUILD, 2, rf"{RCP}: files\.\"/opt/other\.sh\": not a file of any overlay"),
    Case("remove matches nothing", lambda s: s.edit(s.recipe, "[boot]",
                                                   '[image]\nremove = ["nowhere/*"]\n[boot]'),
         BUILD, 2, rf"{RCP}: image\.remove\[0\]: 'nowhere/\*' matches nothing in the base"),
    Case("append cannot remove", lambda s: s.edit(
        s.recipe, "[boot]", '[image]\noutput = "append"\nremove = ["usr"]\n[boot]'),
         BUILD, 2, rf"{RCP}: image\.remove: append mode cannot remove base entries .*"),
    Case("var set twice", lambda s: s.edit(s.recipe, "[vars]", '[vars]\nlog_host = "10.9.9.9"'),
         BUILD, 2, rf"{RCP}: vars\.log_host: also set by the inventory \S+ .*"),
    # values that reach a boot config or a kernel line, and the names of the outputs
    Case("newline in append", lambda s: s.edit(
        s.recipe, 'append = "base norestore', 'append = "base\\nLABEL evil\\n KERNEL '
        'http://evil/x norestore'),
         PUBLISH, 2, rf"{RCP}: boot\.append: a newline \(U\+000A\) at character 5; control "
         r"characters are refused \(in a boot config or a kernel line they would break the "
         r"line\)"),
    Case("carriage return in a label", lambda s: s.edit(
        s.recipe, "# [boot.labels]\n# debug = \"base", "[boot.labels]\ndebug = \"\\rbase"),
         PUBLISH, 2, rf"{RCP}: boot\.labels\.debug: a carriage return \(U\+000D\) at "
         r"character 1; .*"),
    Case("tab in initrd name", lambda s: s.edit(s.recipe, '"core.hts.gz"', '"core\\t.gz"'),
         PUBLISH, 2, rf"{RCP}: boot\.initrd_name: a tab \(U\+0009\) at character 5; .*"),
    Case("NUL in template value", lambda s: s.edit(s.recipe, '"eth1"', '"eth1\\u0000"'),
         BUILD, 2, rf"{RCP}: vars\.internal_iface: NUL \(U\+0000\) at character 5; template "
         r"values may hold tabs and newlines, no other control character"),
    Case("escape in overlay path", lambda s: s.edit(s.recipe, '"../overlays/gameserver"',
                                                    '"../overlays/game\\u001bserver"'),
         BUILD, 2, rf"{RCP}: overlay\[0\]\.source: an escape \(U\+001B\) at character 17; .*"),
    Case("iPXE operator in append", lambda s: s.edit(
        s.recipe, 'append = "base norestore', 'append = "base && chain http://evil/x norestore'),
         PUBLISH, 2, rf"{RCP}: boot\.append: '&&' would chain a command of its own in an iPXE "
         r"script"),
    Case("iPXE comment in group append", lambda s: s.edit(
        s.inventory, 'append = "base norestore', 'append = "base #norestore'),
         PUBLISH, 2, rf"{INV}: group\.canary\.append: '#norestore' would start a comment in an "
         r"iPXE script \(the rest is lost\)"),
    Case("newline in group append", lambda s: s.edit(
        s.inventory, 'append = "base norestore', 'append = "base\\nLABEL evil\\n KERNEL '
        'http://evil/x norestore'),
         PUBLISH, 2, rf"{INV}: group\.canary\.append: a newline \(U\+000A\) at character 5; "
         r"control characters are refused .*"),
    Case("newline in host name", lambda s: s.edit(s.inventory, '"server2"', '"server2\\n"'),
         SERVER, 2, rf"{INV}: host\[1\]\.name: a newline \(U\+000A\) at character 8; .*"),
    Case("DEL in nfs export", lambda s: s.edit(s.inventory, '"/srv/gameserver"',
                                               '"/srv/game\\u007fserver"'),
         SERVER, 2, rf"{INV}: cluster\.nfs_export: DEL \(U\+007F\) at character 10; .*"),
    Case("newline in --mirror", lambda s: None,
         ("fetch", "{recipe}", "--mirror", "http://127.0.0.1:9/\nx", "--cache", "{cache}"), 2,
         r"--mirror \"http://127\.0\.0\.1:9/\\nx\": a mirror must be an http:// or https:// "
         r"URL"),
    Case("initrd is the kernel", lambda s: s.edit(s.recipe, '"core.hts.gz"', '"vmlinuz64"'),
         PUBLISH, 2, rf"{RCP}: boot\.initrd_name: 'vmlinuz64' is the kernel's name"),
    Case("initrd is build.json", lambda s: s.edit(s.recipe, '"core.hts.gz"', '"build.json"'),
         BUILD, 2, rf"{RCP}: boot\.initrd_name: 'build\.json' is the build's manifest"),
    Case("initrd is release.json", lambda s: s.edit(s.recipe, '"core.hts.gz"',
                                                    '"release.json"'),
         PUBLISH, 2, rf"{RCP}: boot\.initrd_name: 'release\.json' is a release's manifest in "
         r"the TFTP root"),
    Case("initrd is the iso", lambda s: s.edit(s.recipe, '"core.hts.gz"', '"gameserver.iso"'),
         ISO, 2,
         rf"{RCP}: boot\.initrd_name: 'gameserver\.iso' is the name of the recipe's ISO"),
    Case("initrd is the lock file", lambda s: s.edit(s.recipe, '"core.hts.gz"',
                                                     '"gameserver.lock"'),
         ("lock", "{recipe}", "--mirror", "{mirror}", "--cache", "{cache}"), 2,
         rf"{RCP}: boot\.initrd_name: 'gameserver\.lock' is the name of the recipe's lock "
         r"file"),
    Case("iso over the initrd", lambda s: None, (*ISO, "-o", "build/gameserver/core.hts.gz"), 2,
         r"build/gameserver/core\.hts\.gz: the ISO would overwrite the build's initrd"),
    Case("iso over the recipe", lambda s: None, (*ISO, "-o", "{recipe}"), 2,
         rf"{RCP}: the ISO would overwrite the recipe"),
    Case("initrd with a comma", lambda s: s.edit(s.recipe, '"core.hts.gz"', '"a.gz,b.gz"'),
         PUBLISH, 2, rf"{RCP}: boot\.initrd_name: 'a\.gz,b\.gz' is not a plain file name .*"),
    Case("bad --mirror", lambda s: None,
         ("fetch", "{recipe}", "--mirror", "ftp://x/", "--cache", "{cache}"), 2,
         r"--mirror ftp://x/: a mirror must be an http:// or https:// URL"),
    # overlays and templates
    Case("undefined variable", lambda s: (s.root / "overlays/gameserver/etc").mkdir() or (
        s.root / "overlays/gameserver/etc/motd.j2").write_text("x\n{{ nfs_sever }}\n"),
         BUILD, 2, r"\S+/etc/motd\.j2:2: undefined template variable 'nfs_sever'"),
    Case("template syntax", lambda s: (s.root / "overlays/gameserver/etc").mkdir() or (
        s.root / "overlays/gameserver/etc/motd.j2").write_text("{% if %}\n"),
         BUILD, 2, r"\S+/etc/motd\.j2:1: template error: .+"),
    Case("escaping symlink", lambda s: (s.root / "overlays/gameserver/opt/up").symlink_to(
        "../../../../etc/passwd"),
         BUILD, 2, r"\S+/opt/up: symlink target '\.\./\.\./\.\./\.\./etc/passwd' escapes the "
         r"image root"),
    Case("fifo in overlay", lambda s: os.mkfifo(s.root / "overlays/gameserver/opt/pipe"),
         BUILD, 2, r"\S+/opt/pipe: only files, directories and symlinks can be overlaid .*"),
    Case("overlay archive climbs out", lambda s: _overlay_tar(s, "opt/../../etc/shadow"),
         BUILD, 2, r"\S+/overlays/site\.tar: 'opt/\.\./\.\./etc/shadow' climbs out of the image "
         r"root \('\.\.'\)"),
    Case("two sources", lambda s: (s.root / "overlays/gameserver/opt/bootlocal.sh").write_text(
        "x\n"),
         BUILD, 2, r"\S+/opt/bootlocal\.sh(\.j2)?: 'opt/bootlocal\.sh' also comes from \S+"),
    # mirrors
    Case("dependency missing", lambda s: (s.mirror / f"{X64}/tcz/libtirpc.tcz.md5.txt").unlink(),
         BUILD, 1, r"gameserver\.toml -> nfs-utils -> rpcbind -> libtirpc\.tcz: not found on any "
         r"mirror"),
    Case("md5 mismatch", lambda s: (s.mirror / f"{X64}/tcz/dhcp.tcz.md5.txt").write_text(
        "0" * 32 + "  dhcp.tcz\n"),
         BUILD, 1, r"dhcp\.tcz: checksum mismatch: expected md5 0{32}, got [0-9a-f]{32} "
         r"\(from http://\S+/dhcp\.tcz\)"),
    Case("bad md5 file", lambda s: (s.mirror / f"{DIST}/vmlinuz64.md5.txt").write_text(
        "not a checksum\n"),
         BUILD, 1, rf"{DIST}/vmlinuz64\.md5\.txt: not an md5sum line: .*"),
    Case("mirror down", lambda s: None,
         ("fetch", "{recipe}", "--mirror", "http://127.0.0.1:9/", "--cache", "{cache}"), 1,
         r"\S+: could not download: http://127\.0\.0\.1:9/\S+: Connection refused"),
    Case("locked without lock", lambda s: None, (*BUILD, "--locked"), 1,
         rf"{RCP}: --locked, but there is no lock file \(run tcbuild lock\)"),
    Case("broken lock file", lambda s: (s.root / "recipes/gameserver.lock").write_text("{"),
         BUILD, 2, r"\S+/gameserver\.lock: not a JSON file .*"),
    # archives
    Case("core not gzip", lambda s: s.replace_on_mirror(f"{DIST}/corepure64.gz", b"PK\3\4zip"),
         BUILD, 1, r"corepure64\.gz: not a gzip-compressed or plain cpio archive"),
    Case("core corrupt gzip", lambda s: s.replace_on_mirror(
        f"{DIST}/corepure64.gz", gzip.compress(_newc(b"bin") + _newc(b"TRAILER!!!"))[:-6]),
         BUILD, 1, r"corepure64\.gz: corrupt gzip data: .+"),
    Case("core truncated cpio", lambda s: s.replace_on_mirror(
        f"{DIST}/corepure64.gz", gzip.compress(_newc(b"lib/modules/x", data=b"abc")[:-8])),
         BUILD, 1, r"corepure64\.gz: truncated cpio at byte \d+ \(reading .+\)"),
    Case("core bad magic", lambda s: s.replace_on_mirror(
        f"{DIST}/corepure64.gz", gzip.compress(b"070707" + _newc(b"x")[6:])),
         BUILD, 1, r"corepure64\.gz: bad cpio magic b'070707' at byte 0 \(not a newc archive\)"),
    Case("core absurd name", lambda s: s.replace_on_mirror(
        f"{DIST}/corepure64.gz", gzip.compress(_newc(b"x", namesize=0x7FFFFFFF))),
         BUILD, 1, r"corepure64\.gz: cpio name size 2147483647 at byte 0"),
    Case("core name without nul", lambda s: s.replace_on_mirror(
        f"{DIST}/corepure64.gz", gzip.compress(_newc(b"xy", namesize=2))),
         BUILD, 1, r"corepure64\.gz: cpio name without NUL at byte 0"),
    Case("core without modules", lambda s: s.replace_on_mirror(
        f"{DIST}/corepure64.gz", gzip.compress(_newc(b"bin") + _newc(b"TRAILER!!!"))),
         BUILD, 1, r"corepure64\.gz: expected one lib/modules/<version>/ directory, found none"),
    Case("extension not squashfs", lambda s: s.replace_on_mirror(f"{X64}/tcz/dhcp.tcz",
                                                                 b"not squashfs" * 100),
         BUILD, 1, r"dhcp\.tcz: not a squashfs image .*"),
    Case("extension xz", lambda s: _mksquashfs(s, "-comp", "xz", "-b", "4k"),
         BUILD, 1, r"nrpe\.tcz \(\S+/nrpe\.tcz\): xz-compressed; Tiny Core needs gzip .*"),
    Case("extension 128k blocks", lambda s: _mksquashfs(s, "-comp", "gzip"),
         BUILD, 1, r"nrpe\.tcz \(\S+/nrpe\.tcz\): 128 KiB blocks; Tiny Core needs 4 KiB .*"),
    Case("local checksum", lambda s: (s.root / "recipes/extras/nrpe.tcz.md5.txt").write_text(
        "f" * 32 + "  nrpe.tcz\n"),
         BUILD, 1, r"\S+/nrpe\.tcz: checksum mismatch: expected md5 f{32} .*"),
    # inventories
    Case("multicast mac", lambda s: s.edit(s.inventory, "52:54:00:12:34:57", "ab:cd:ef:12:34:56"),
         SERVER, 2, rf"{INV}: host\[1\]\.mac: ab:cd:ef:12:34:56 is a multicast address.*"),
    Case("duplicate ip", lambda s: s.edit(s.inventory, '"10.1.1.6"', '"10.1.1.5"'),
         SERVER, 2, rf"{INV}: host\[1\]\.ip: 10\.1\.1\.5 is also used by host\[0\]"),
    Case("ip outside subnet", lambda s: s.edit(s.inventory, '"10.1.1.6"', '"10.2.1.6"'),
         SERVER, 2, rf"{INV}: host\[1\]\.ip: 10\.2\.1\.6 is outside the internal subnet .*"),
    Case("second ip outside", lambda s: s.edit(s.inventory, '"172.16.1.6"', '"172.17.1.6"'),
         SERVER, 2, rf"{INV}: host\[1\]\.second_ip: 172\.17\.1\.6 is outside the external .*"),
    Case("bad host name", lambda s: s.edit(s.inventory, '"server2"', '"server_2"'),
         SERVER, 2, rf"{INV}: host\[1\]\.name: 'server_2' is not a valid host name .*"),
    Case("host names sharing a log file", lambda s: s.edit(s.inventory, '"server2"',
                                                           '"Server1-err"'),
         SERVER, 2, rf"{INV}: host\[1\]\.name: 'Server1-err' and host\[0\] 'server1' would "
         r"share the log host's file Server1-err\.log; rename one"),
    Case("name pattern without {n}", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'name_pattern = "node"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.name_pattern: 'node' is not a host name with {{n}} once "
         r"in it, like 'server\{n\}'"),
    Case("http_url port out of range", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'http_url = "http://10.1.1.1:80800/"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.http_url: 'http://10\.1\.1\.1:80800/': 80800 is not a "
         r"port number"),
    Case("http_url host a wildcard", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'http_url = "http://.example.com/"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.http_url: 'http://\.example\.com/': '\.example\.com' is "
         r"neither an IPv4 address nor a DNS name"),
    Case("http_url path climbs", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'http_url = "http://10.1.1.1/boot/../"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.http_url: 'http://10\.1\.1\.1/boot/\.\./': a part of "
         r"its path starts with '\.'.*"),
    Case("discovery range backwards", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'discovery = "10.1.1.250-10.1.1.200"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.discovery: '10\.1\.1\.250-10\.1\.1\.200' starts after it "
         r"ends"),
    Case("discovery range outside the subnet", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'discovery = "10.1.1.200-10.1.2.20"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.discovery: 10\.1\.2\.20 is outside the internal subnet "
         r"10\.1\.1\.0/24"),
    Case("discovery range holding a host", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'discovery = "10.1.1.2-10.1.1.5"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.discovery: 10\.1\.1\.2-10\.1\.1\.5 includes 10\.1\.1\.5, "
         r"the fixed address of host server1"),
    Case("discovery range holding the router", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'discovery = "10.1.1.1-10.1.1.4"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.discovery: 10\.1\.1\.1-10\.1\.1\.4 includes 10\.1\.1\.1, "
         r"the address of internal_router"),
    Case("discovery not a range", lambda s: s.edit(
        s.inventory, 'tftp_root ', 'discovery = "10.1.1.200"\ntftp_root '),
         SERVER, 2, rf"{INV}: cluster\.discovery: '10\.1\.1\.200' is not an address range "
         r"like '10\.1\.1\.200-10\.1\.1\.250'"),
    Case("unknown group", lambda s: s.edit(s.inventory, 'group     = "canary"',
                                           'group     = "canari"'),
         SERVER, 2, rf"{INV}: host\[1\]\.group: no group 'canari' \(defined: canary\)"),
    Case("bmc not ipmi", lambda s: s.edit(s.inventory, 'second_ip = "172.16.1.5"',
                                          'second_ip = "172.16.1.5"\nbmc = "http://10.1.2.5"'),
         POWER, 2, rf"{INV}: host\[0\]\.bmc: 'http://10\.1\.2\.5' is not a BMC address like "
         r"'ipmi://10\.1\.2\.5' .*"),
    Case("bmc password file readable", lambda s: _bmc(s, 0o644),
         POWER, 2, r"\S+/examples/bmc\.pw: the BMC password file may be read by others \(mode "
         rf"0644\); chmod 600 it \({INV}: host\[0\]\.bmc_password_file\)"),
    Case("bmc password file missing", lambda s: _bmc(s, 0o600) or (
        s.inventory.parent / "bmc.pw").unlink(),
         POWER, 2, r"\S+/examples/bmc\.pw: cannot read the BMC password file \(No such file or "
         rf"directory; {INV}: host\[0\]\.bmc_password_file\)"),
    Case("power unknown placeholder", lambda s: s.edit(
        s.inventory, "[group.canary]", 'power_command = "site-power {host}"\n[group.canary]'),
         POWER, 2, rf"{INV}: cluster\.power_command: {{host}} is not one of {{action}}, .*"),
    Case("power unknown host", lambda s: None,
         ("power", "on", "server9", "--inventory", "{inventory}"), 2,
         rf"{INV}: no host 'server9' \(hosts: server1, server2\)"),
    Case("power without bmc", lambda s: None, POWER, 2,
         rf"{INV}: server1 has no bmc and no power_command \(add bmc = .*"),
    Case("group is an array", lambda s: s.edit(s.inventory, 'group     = "canary"',
                                               'group     = ["canary"]'),
         SERVER, 2, rf"{INV}: host\[1\]\.group: expected a string, got an array"),
    Case("inventory nested too deeply", lambda s: _nested(s.inventory),
         SERVER, 2, rf"{INV}: invalid TOML: arrays or inline tables nested too deeply"),
    Case("recipe nested too deeply", lambda s: _nested(s.recipe),
         BUILD, 2, rf"{RCP}: invalid TOML: arrays or inline tables nested too deeply"),
    Case("installed config not utf-8", lambda s: (s.root / "out").mkdir() or (
        s.root / "out/exports").write_bytes(b"/srv caf\xe9(ro)\n"),
         (*SERVER, "--check"), 1, r"\S*out/exports: not UTF-8 text \(byte 8\), so not a file "
         r"tcbuild wrote; nothing to compare with"),
    # images
    Case("malformed elf", _malformed_elf, (*BUILD, "--check", "error"), 1,
         r"/opt/bad \[overlay:\S+\]: a malformed ELF object: its program headers \(\d+ bytes "
         r"at offset 0xfffffffffffffff0\) lie outside the file \(\d+ bytes\); no loader would "
         r"map it \(replace the file\)"),
    # enroll and retire: the inventory is left as it was (the test compares its bytes)
    Case("enroll malformed mac", lambda s: None, (*ENROLL[:1], "52:54:00:12:34", *ENROLL[1:]), 2,
         rf"{INV}: '52:54:00:12:34' is not a MAC address like 52:54:00:12:34:56"),
    Case("enroll taken mac", lambda s: None, (*ENROLL[:1], "52-54-00-12-34-56", *ENROLL[1:]), 2,
         rf"{INV}: MAC 52:54:00:12:34:56 is already host server1's"),
    Case("enroll taken name", lambda s: None, (*NEW, "--name", "Server2"), 2,
         rf"{INV}: name Server2 is already taken by a host"),
    Case("enroll taken address", lambda s: None, (*NEW, "--second-ip", "172.16.1.5"), 2,
         rf"{INV}: second_ip 172\.16\.1\.5: already used by host server1"),
    Case("enroll full range", lambda s: s.edit(
        s.inventory, 'internal_subnet  = "10.1.1.0/24"',
        'internal_subnet  = "10.1.1.0/29"\ndiscovery = "10.1.1.2-10.1.1.4"'), NEW, 2,
         rf"{INV}: ip: the internal subnet 10\.1\.1\.0/29 has no free address left .*"),
    Case("enroll control socket unreachable", lambda s: None,
         (*NEW, "--apply", "kea", "--kea-socket", "{out}/kea.sock", "--kea-conf", "{out}/kea"),
         1, r"Kea's control socket \S+/out/kea\.sock: No such file or directory"),
    Case("enroll --all-new with a MAC", lambda s: None, (*NEW, "--all-new"), 2,
         r"enroll --all-new: MAC is one machine's; give it to `tcbuild enroll MAC` instead"),
    Case("enroll --all-new with a name", lambda s: None, (*ENROLL, "--all-new", "--name", "x"),
         2, r"enroll --all-new: --name is one machine's; give it to `tcbuild enroll MAC` "
         r"instead"),
    Case("enroll neither MAC nor --all-new", lambda s: None, ENROLL, 2,
         r"enroll: give the machine's MAC, or --all-new"),
    Case("enroll a MAC with --leases", lambda s: None, (*NEW, "--leases", "{out}/leases"), 2,
         r"enroll: --leases goes with --all-new"),
    Case("retire unknown host", lambda s: None,
         ("retire", "server9", "--inventory", "{inventory}"), 2,
         rf"{INV}: no host named 'server9' \(hosts: server1, server2\)"),
    # rollout
    Case("rollout waves", lambda s: None, (*ROLLOUT, "--waves", "1,0"), 2,
         r"--waves 1,0: '0' is out of range \(1\.\. hosts, or 1%\.\.100%\)"),
    Case("rollout canary", lambda s: None, (*ROLLOUT, "--canary", "server9"), 2,
         r"--canary server9: not one of the hosts this recipe boots \(server1, server2\)"),
    Case("rollout resume without a record", lambda s: None,
         ("rollout", "--resume", "--tftp", "{tftp}"), 2,
         r"\S+/tftp/tcbuild/rollout\.json: no rollout recorded"),
    # TFTP roots
    Case("tftp root missing", lambda s: shutil.rmtree(s.root / "tftp"),
         PUBLISH, 2, r"\S+/tftp: the TFTP root does not exist"),
    Case("bootloader missing", lambda s: (s.root / "bootloader/pxelinux.0").unlink(),
         PUBLISH, 1, r"pxelinux\.0 not found in \S+ \(apt-get install pxelinux\)"),
    Case("tftp root twice", lambda s: None, (*PUBLISH, "--tftp", "{tftp}/../tftp"), 2,
         r"\S+/tftp/\.\./tftp: the TFTP root is named twice \(also as \S+/tftp\)"),
    Case("rollback root twice", lambda s: None,
         ("rollback", "--tftp", "{tftp}", "--tftp", "{tftp}/../tftp", "--wait", "0"), 2,
         r"\S+/tftp/\.\./tftp: the TFTP root is named twice \(also as \S+/tftp\)"),
    Case("verify root twice", lambda s: None, ("verify", "--tftp", "{tftp}", "--tftp", "{tftp}"),
         2, r"\S+/tftp: the TFTP root is named twice"),
    Case("releases root twice", lambda s: None,
         ("releases", "--tftp", "{tftp}", "--tftp", "{tftp}"), 2,
         r"\S+/tftp: the TFTP root is named twice"),
    Case("remote root bad port", lambda s: None, (*PUBLISH[:-2], "--tftp", "ssh://boot1:x/srv"),
         2, r"--tftp ssh://boot1:x/srv: not a port: 'x'"),
    Case("remote root no path", lambda s: None, ("verify", "--tftp", "ssh://boot1"), 2,
         r"--tftp ssh://boot1: no path \(ssh://\[user@\]host\[:port\]/path\)"),
    Case("remote root twice", lambda s: None,
         ("releases", "--tftp", "ssh://b/srv", "--tftp", "ssh://b/srv/"), 2,
         r"ssh://b/srv: the TFTP root is named twice"),
    Case("remote root for rollout twice", lambda s: None,
         ("rollout", "--tftp", "ssh://boot1/srv", "--tftp", "ssh://boot1/srv/", "--resume"), 2,
         r"ssh://boot1/srv: the TFTP root is named twice"),
    Case("wait nan", lambda s: None, (*PUBLISH, "--wait", "nan"), 2,
         r"tcbuild publish: argument --wait: 'nan' is not a finite number of seconds >= 0 "
         r"\(see tcbuild publish --help\)"),
    Case("wait negative", lambda s: None, ("rollback", "--tftp", "{tftp}", "--wait", "-1"), 2,
         r"tcbuild rollback: argument --wait: '-1' is not a finite number of seconds >= 0 .*"),
    Case("verify foreign config", lambda s: [
        shutil.copy(s.root / "bootloader" / n, s.root / "tftp" / n)
        for n in syslinux.PXE] and (s.root / "tftp/pxelinux.cfg").mkdir() or (
        s.root / "tftp/pxelinux.cfg/default").write_text("MENU TITLE x\n"),
         ("verify", "--tftp", "{tftp}"), 1,
         r"\S+/tftp/pxelinux\.cfg/default:1: unknown or malformed directive 'MENU TITLE x'"),
]


@pytest.fixture
def site(tmp_path: Path, mirror_tree: MirrorTree) -> Site:
    for name in ("recipes", "overlays", "examples"):
        shutil.copytree(ROOT / name, tmp_path / name, symlinks=True)
    shutil.copytree(mirror_tree.root, tmp_path / "mirror")
    (tmp_path / "tftp").mkdir()
    (tmp_path / "bootloader").mkdir()
    for name in syslinux.PXE:
        (tmp_path / "bootloader" / name).write_bytes(b"stand-in\n")
    return Site(tmp_path, tmp_path / "mirror", "")


def _hash(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "" for p in sorted(root.rglob("*"))}


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, site: Site) -> None:
    if case.name.startswith("extension "):
        require_tool("mksquashfs", "squashfs-tools")
    with MirrorServer(site.mirror) as server:
        case.setup(site)
        out, tftp = site.root / "out", site.root / "tftp"
        before = (_hash(out), _hash(tftp), site.inventory.read_bytes())
        values = {"recipe": site.recipe, "inventory": site.inventory, "tftp": tftp, "out": out,
                  "cache": site.root / "cache", "mirror": server.url,
                  "boot": site.root / "bootloader"}
        args = [a.format(**{k: str(v) for k, v in values.items()}) for a in case.args]
        result = subprocess.run([sys.executable, "-m", "tcbuild", *args], cwd=site.root,
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})  # this tree's
    lines = result.stderr.splitlines()
    assert result.returncode == case.status, result.stderr
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    assert re.fullmatch(case.line, lines[0]), lines[0]
    assert (_hash(out), _hash(tftp), site.inventory.read_bytes()) == before
