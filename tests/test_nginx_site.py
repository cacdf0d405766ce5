"""nginx's site for HTTP boot (`nginx-tcbuild.conf`): its text, `nginx -t`, and a real nginx on
loopback serving a published tree: what iPXE fetches, byte for byte, and none of the state.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pwd
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tcbuild.bootserver import nginx
from tcbuild.bootserver.files import server_files
from tcbuild.bootserver.generated import header
from tcbuild.config.inventory import Inventory
from tcbuild.config.inventoryfile import load_inventory
from tcbuild.tftproot import rollout, state, writing

from .kit.requires import require_tool
from .test_ipxe import publish

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples/cluster.toml"
MAC_CONFIG = "01-52-54-00-12-34-57"  # server2, in the canary group: its own config and script


def served_at(inventory: Inventory, http_url: str, tftp_root: str = "/tftpboot") -> Inventory:
    return replace(inventory, cluster=replace(inventory.cluster, http_url=http_url,
                                              tftp_root=tftp_root))


def test_the_site_serves_the_tree_at_the_url_and_refuses_its_state() -> None:
    inventory = served_at(load_inventory(EXAMPLE), "http://10.1.1.1/")
    files = server_files(inventory)
    assert list(files)[-1] == nginx.SITE
    assert files[nginx.SITE] == header(inventory) + (
        "# The TFTP root /tftpboot, served for iPXE's HTTP boot at\n"
        "# http://10.1.1.1/\n"
        "# Include it from nginx's http block: e.g. copy it to /etc/nginx/conf.d/tcbuild.conf.\n"
        "server {\n"
        "    listen 10.1.1.1:80;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    autoindex off;\n"
        "    default_type application/octet-stream;\n"
        "\n"
        "    # The tree, file by file (a directory: 403, no listing).\n"
        "    location / {\n"
        "        alias /tftpboot/;\n"
        "    }\n"
        "\n"
        "    # State and files being written: the publish lock, release.json, histories,\n"
        "    # bootloader and rollout records, hidden files (checked before the releases "
        "below).\n"
        "    location ~* (^|/)\\.|\\.(json|lock)$ {\n"
        "        return 404;\n"
        "    }\n"
        "    location /tcbuild/ {\n"
        "        return 404;\n"
        "    }\n"
        "\n"
        "    # What iPXE fetches from a release: its kernel and initrd.\n"
        "    location ~ ^/(tcbuild/releases/[^/]+/[^/]+)$ {\n"
        "        alias /tftpboot/$1;\n"
        "    }\n"
        "}\n")
    assert nginx.SITE not in server_files(load_inventory(EXAMPLE))  # no http_url: no site


def test_a_url_by_name_with_a_port_and_a_path() -> None:
    inventory = served_at(load_inventory(EXAMPLE), "http://boot.example.com:8080/tc+boot/v1.2/",
                          "/srv/tftp/")
    text = nginx.nginx_site(inventory)
    assert text == nginx.nginx_site(inventory)  # deterministic
    assert "    listen 8080;\n    server_name boot.example.com;\n" in text
    assert "    location /tc+boot/v1.2/ {\n        alias /srv/tftp/;\n    }\n" in text
    assert "    location /tc+boot/v1.2/tcbuild/ {\n        return 404;\n" in text
    assert ("    location ~ ^/tc\\+boot/v1\\.2/(tcbuild/releases/[^/]+/[^/]+)$ {\n"
            "        alias /srv/tftp/$1;\n") in text
    assert text.endswith("    location / {\n        return 404;\n    }\n}\n")  # outside the path


def test_the_site_knows_where_the_tree_keeps_its_state() -> None:
    assert nginx.RELEASES == state.RELEASES
    for path in (writing.LOCK, state.HISTORY, state.HISTORIES, state.BOOTLOADER, rollout.ROLLOUT):
        assert path.startswith(f"{nginx.STATE_DIR}/"), path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main_conf(work: Path, sites: list[Path]) -> Path:
    """A minimal nginx.conf in `work` including the sites, as Debian's includes conf.d/."""
    temp = work / "temp"
    temp.mkdir()
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.geteuid() == 0 else ""
    includes = "".join(f"    include {site};\n" for site in sites)
    conf = work / "nginx.conf"
    conf.write_text(f"""{user}worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{includes}}}
""")
    return conf


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, each stopped by its pid at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_nginx_serves_what_ipxe_fetches_and_none_of_the_state(
        site: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    require_tool("nginx", "nginx-light")
    publish(site, 1_000_000_000.0)
    tftp = site / "tftp"
    release = state.releases(tftp)[-1]
    (tftp / rollout.ROLLOUT).write_text("{}\n")  # stands in for a rollout's record
    (tftp / "ipxe/.default.ipxe.x.tcbuild-tmp").write_text("being written\n")
    (tftp / "tcbuild/state-to-come").write_text("any other file under tcbuild/\n")
    (tftp / "tcbuild/releases/.R2.partial").mkdir()
    (tftp / "tcbuild/releases/.R2.partial/vmlinuz64").write_text("being staged\n")
    for path in [tmp_path, *tftp.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else 0o644)

    work = tmp_path / "nginx"
    work.mkdir()
    ports = free_port(), free_port()
    sites = []
    for port, url_path in zip(ports, ("/", "/tc/boot/"), strict=True):
        inventory = served_at(load_inventory(site / "examples/cluster.toml"),
                              f"http://127.0.0.1:{port}{url_path}", str(tftp))
        sites.append(work / f"site-{port}.conf")
        sites[-1].write_text(server_files(inventory)[nginx.SITE])
    conf = main_conf(work, sites)
    checked = subprocess.run(["nginx", "-t", "-p", work, "-c", conf, "-e", work / "error.log"],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr and "test is successful" in checked.stderr

    started.append(subprocess.Popen(["nginx", "-p", work, "-c", conf, "-e", work / "error.log",
                                     "-g", "daemon off;"]))
    deadline = time.monotonic() + 10
    while not all(listening(port) for port in ports):
        assert started[0].poll() is None, (work / "error.log").read_text()
        assert time.monotonic() < deadline, "nginx did not listen within 10 s"
        time.sleep(0.05)

    fetched = {
        "boot.ipxe": tftp / "boot.ipxe",
        "ipxe/default.ipxe": tftp / "ipxe/default.ipxe",
        f"ipxe/{MAC_CONFIG}.ipxe": tftp / f"ipxe/{MAC_CONFIG}.ipxe",
        f"{state.RELEASES}/{release.id}/{release.kernel}": release.path / release.kernel,
        f"{state.RELEASES}/{release.id}/{release.initrd}": release.path / release.initrd,
        "pxelinux.0": tftp / "pxelinux.0",
    }
    there = [f"{state.RELEASES}/{release.id}/release.json", state.BOOTLOADER,
             state.HISTORIES, writing.LOCK, rollout.ROLLOUT,
             "tcbuild/state-to-come", "tcbuild/releases/.R2.partial/vmlinuz64",
             "ipxe/.default.ipxe.x.tcbuild-tmp"]
    for path in there:
        assert (tftp / path).is_file(), path  # the state is really there to refuse
    directories = ["", "tcbuild/", f"{state.HISTORY}/", f"{state.RELEASES}/",
                   f"{state.RELEASES}/{release.id}/", "ipxe/", "pxelinux.cfg/"]
    refused = [*there, *directories, "no-such-file"]
    for port, url_path in zip(ports, ("/", "/tc/boot/"), strict=True):
        for path, source in fetched.items():
            status, body = get(port, url_path + path)
            assert status == 200, (url_path + path, status)
            assert hashlib.sha256(body).hexdigest() == hashlib.sha256(
                source.read_bytes()).hexdigest(), path
        kernel = get(port, f"{url_path}{state.RELEASES}/{release.id}/{release.kernel}")[1]
        assert hashlib.sha256(kernel).hexdigest() == release.files[release.kernel].sha256
        for path in refused:
            status, body = get(port, url_path + path)
            assert status in (403, 404), (url_path + path, status)
            assert b"Index of" not in body
    assert get(ports[1], "/boot.ipxe")[0] == 404  # outside the URL's path
    assert get(ports[1], "/tcbuild/bootloader.json")[0] == 404


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
